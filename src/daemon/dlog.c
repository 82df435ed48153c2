/* The daemon's implementation of core/log.h: one line per message on stderr, with the time
 * (UTC) and "mabod:", as a service manager's journal expects. */
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "core/log.h"

static int verbose;

void log_set_verbose(int level)
{
	verbose = level;
}

static void log_v(const char *level, const char *fmt, va_list ap)
{
	char buf[1024], when[32];
	struct timespec ts;
	struct tm tm;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ mabod: %s%s\n", when, ts.tv_nsec / 1000000, level, buf);
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
	va_list ap;
	/* Events are the daemon's output: always shown; -v adds debug lines. */
	va_start(ap, fmt);
	log_v("", fmt, ap);
	va_end(ap);
}

void log_debug(const char *fmt, ...)
{
	if (verbose < 1)
		return;
	va_list ap;
	va_start(ap, fmt);
	log_v("debug: ", fmt, ap);
	va_end(ap);
}
