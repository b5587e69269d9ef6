/*
 * LD_PRELOAD shim that makes fsync() and fdatasync() fail with EIO while a
 * flag file exists, for tests/sqlite_commit_failure.rs: a disk that stops
 * accepting writes, seen by SQLite as it commits.
 *
 * The flag is the file named by LEASEHOLD_FSYNC_FAULT_FLAG: the test arms
 * the fault by creating it and disarms it by removing it. Without the
 * variable the calls are passed through.
 *
 * Build: cc -shared -fPIC -O2 -o libfsync_fault.so fsync_fault.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

typedef int (*sync_fn)(int);

static int armed(void) {
    const char *flag = getenv("LEASEHOLD_FSYNC_FAULT_FLAG");
    return flag != NULL && *flag != '\0' && access(flag, F_OK) == 0;
}

int fsync(int fd) {
    static sync_fn real;
    if (armed()) {
        errno = EIO;
        return -1;
    }
    if (real == NULL) {
        real = (sync_fn)dlsym(RTLD_NEXT, "fsync");
    }
    return real(fd);
}

int fdatasync(int fd) {
    static sync_fn real;
    if (armed()) {
        errno = EIO;
        return -1;
    }
    if (real == NULL) {
        real = (sync_fn)dlsym(RTLD_NEXT, "fdatasync");
    }
    return real(fd);
}
