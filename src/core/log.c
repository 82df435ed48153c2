#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>

static int verbose;

void log_set_verbose(int level)
{
	verbose = level;
}

static void log_v(const char *prefix, const char *fmt, va_list ap)
{
	char buf[1024];
	vsnprintf(buf, sizeof(buf), fmt, ap);
	/* \r first: the console may be in raw mode, where \n does not return the carriage. */
	fprintf(stderr, "\rmabo-vmm: %s%s\r\n", prefix, buf);
}

void log_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_v("error: ", fmt, ap);
	va_end(ap);
}

void log_warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_v("warning: ", fmt, ap);
	va_end(ap);
}

void log_info(const char *fmt, ...)
{
	if (verbose < 1)
		return;
	va_list ap;
	va_start(ap, fmt);
	log_v("", fmt, ap);
	va_end(ap);
}

void log_debug(const char *fmt, ...)
{
	if (verbose < 2)
		return;
	va_list ap;
	va_start(ap, fmt);
	log_v("debug: ", fmt, ap);
	va_end(ap);
}
