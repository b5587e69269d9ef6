/*
 * LD_PRELOAD shim that steps the wall clock of a process, for
 * tests/clock_step.rs.
 *
 * Adds an offset to CLOCK_REALTIME and CLOCK_REALTIME_COARSE as returned by
 * clock_gettime(), and to gettimeofday() and time(). Monotonic clocks
 * (CLOCK_MONOTONIC, CLOCK_BOOTTIME, ...) are left alone: a wall-clock step
 * does not move them either.
 *
 * The offset, a signed 64-bit count of nanoseconds in native byte order, is
 * read from the first 8 bytes of the file named by LEASEHOLD_CLOCK_OFFSET_FILE,
 * mapped shared: a test steps the clock of every process at once by
 * rewriting the file, and each read costs one load. Without the variable, or
 * if the file cannot be mapped, the offset is 0 (and a warning is printed).
 *
 * Build: cc -shared -fPIC -O2 -o libclock_shift.so clock_shift.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);
typedef int (*gettimeofday_fn)(struct timeval *, void *);

static clock_gettime_fn real_clock_gettime;
static gettimeofday_fn real_gettimeofday;
static volatile const int64_t *offset_ns;

__attribute__((constructor)) static void clock_shift_init(void) {
    real_clock_gettime = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
    real_gettimeofday = (gettimeofday_fn)dlsym(RTLD_NEXT, "gettimeofday");
    const char *path = getenv("LEASEHOLD_CLOCK_OFFSET_FILE");
    if (path == NULL || *path == '\0') {
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "clock_shift: cannot open %s: offset stays 0\n", path);
        return;
    }
    void *map = mmap(NULL, sizeof(int64_t), PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        fprintf(stderr, "clock_shift: cannot map %s: offset stays 0\n", path);
        return;
    }
    offset_ns = (volatile const int64_t *)map;
}

static int64_t current_offset(void) {
    return offset_ns == NULL ? 0 : __atomic_load_n(offset_ns, __ATOMIC_RELAXED);
}

static void shift(struct timespec *ts) {
    int64_t off = current_offset();
    if (off == 0) {
        return;
    }
    int64_t ns = (int64_t)ts->tv_nsec + off % 1000000000LL;
    int64_t sec = (int64_t)ts->tv_sec + off / 1000000000LL;
    if (ns < 0) {
        ns += 1000000000LL;
        sec -= 1;
    } else if (ns >= 1000000000LL) {
        ns -= 1000000000LL;
        sec += 1;
    }
    ts->tv_sec = (time_t)sec;
    ts->tv_nsec = (long)ns;
}

static int realtime(struct timespec *ts) {
    if (real_clock_gettime == NULL) {
        real_clock_gettime = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
    }
    int rc = real_clock_gettime(CLOCK_REALTIME, ts);
    if (rc == 0) {
        shift(ts);
    }
    return rc;
}

int clock_gettime(clockid_t clk, struct timespec *ts) {
    if (real_clock_gettime == NULL) {
        real_clock_gettime = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
    }
    int rc = real_clock_gettime(clk, ts);
    if (rc == 0 && (clk == CLOCK_REALTIME || clk == CLOCK_REALTIME_COARSE)) {
        shift(ts);
    }
    return rc;
}

int gettimeofday(struct timeval *tv, void *tz) {
    if (real_gettimeofday == NULL) {
        real_gettimeofday = (gettimeofday_fn)dlsym(RTLD_NEXT, "gettimeofday");
    }
    struct timespec ts;
    int rc = realtime(&ts);
    if (rc != 0) {
        return rc;
    }
    if (tz != NULL) {
        struct timeval ignored;
        real_gettimeofday(&ignored, tz);
    }
    tv->tv_sec = ts.tv_sec;
    tv->tv_usec = ts.tv_nsec / 1000;
    return 0;
}

time_t time(time_t *out) {
    struct timespec ts;
    if (realtime(&ts) != 0) {
        return (time_t)-1;
    }
    if (out != NULL) {
        *out = ts.tv_sec;
    }
    return ts.tv_sec;
}
