/* Skew a process's wall clock by $SEQSWEEP_SKEW_S seconds, and nothing else.
 *
 * The test cluster's stand-in for a machine whose clock is wrong. Debian 12's
 * libfaketime cannot do this for Python 3.11: with its monotonic clock left true,
 * time.sleep() fails with EINVAL (clock_nanosleep on CLOCK_MONOTONIC, TIMER_ABSTIME);
 * with it faked, threading.Event.wait() hangs. Only the wall clock is shifted here,
 * so sleeps, timeouts and the monotonic clock stay true, as on a real machine.
 * Built by tests/cluster.py: cc -shared -fPIC -o wallclock_skew.so wallclock_skew.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static long skew(void) {
    const char *text = getenv("SEQSWEEP_SKEW_S");
    return text ? strtol(text, NULL, 10) : 0;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    static int (*real)(clockid_t, struct timespec *);
    if (!real) real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    int result = real(id, ts);
    if (result == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) ts->tv_sec += skew();
    return result;
}

int gettimeofday(struct timeval *tv, void *tz) {
    static int (*real)(struct timeval *, void *);
    if (!real) real = (int (*)(struct timeval *, void *))dlsym(RTLD_NEXT, "gettimeofday");
    int result = real(tv, tz);
    if (result == 0 && tv) tv->tv_sec += skew();
    return result;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}
