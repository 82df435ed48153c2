/* A quiet log for fuzz targets (core/log.c is not linked into them): the code under test logs
 * one line per refused input, so the lines are formatted (format bugs still show) and dropped.
 * Standard error itself stays open: a crash's report (sanitizers, libFuzzer) must reach the
 * fuzzer's log. */
#include <stdarg.h>
#include <stdio.h>

#include "core/log.h"

static void fuzz_log(const char *fmt, va_list ap)
{
	char buf[1024];
	vsnprintf(buf, sizeof(buf), fmt, ap);
}
#define FUZZ_LOG_FN(name)                                                                          \
	void name(const char *fmt, ...)                                                            \
	{                                                                                          \
		va_list ap;                                                                        \
		va_start(ap, fmt);                                                                 \
		fuzz_log(fmt, ap);                                                                 \
		va_end(ap);                                                                        \
	}
FUZZ_LOG_FN(log_error)
FUZZ_LOG_FN(log_warn)
FUZZ_LOG_FN(log_info)
FUZZ_LOG_FN(log_debug)
void log_set_verbose(int level)
{
	(void)level;
}
