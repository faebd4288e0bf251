/* The pager's readings of memory pressure and limits (pager/pressure.c):
 * the kernel's PSI trigger, the memory limits of the process's cgroup and
 * what that cgroup uses, and the process's resident size.
 *
 * Everything here runs inside the allocator and on the pager thread, so
 * nothing allocates: files are read with open(2)/read(2) into the caller's
 * stack, a few KiB at most, and parsed by hand. Every function leaves errno
 * as it found it. The *_at and parse functions are the testable cores: the
 * real readings are thin wrappers that feed them /proc and /sys. */
#ifndef TIDE_PRESSURE_H
#define TIDE_PRESSURE_H

#include <stdbool.h>
#include <stddef.h>

/* ---- PSI trigger ---------------------------------------------------------- */
/* A descriptor on /proc/pressure/memory armed with the trigger "some
 * <stall_us> <window_us>": it reports POLLPRI when tasks stalled on memory
 * for stall_us within any window_us. An unprivileged process may only use
 * windows that are multiples of 2 s: when the kernel refuses, the trigger
 * is tried once more with the window rounded up to that (at most 10 s) and
 * the stall scaled with it. Returns -1 without PSI or when refused. */
int tm_psi_open(unsigned stall_us, unsigned window_us);
int tm_psi_open_at(const char *path, unsigned stall_us, unsigned window_us);
/* Close a descriptor tm_psi_open returned (-1: nothing). */
void tm_psi_close(int fd);

/* ---- cgroup limits ----------------------------------------------------------- */
/* The smallest memory limit that applies to the process's cgroup, in bytes
 * (SIZE_MAX: none): cgroup v2 memory.high and memory.max, cgroup v1
 * memory.limit_in_bytes and memory.soft_limit_in_bytes, from the process's
 * cgroup up to the top of the mounted hierarchy. */
size_t tm_memory_limit(void);
/* What the cgroup holding that limit uses (v2 memory.current, v1
 * memory.usage_in_bytes); with no limit anywhere, the process's own
 * cgroup. 0 when unknown. */
size_t tm_memory_usage(void);
/* This process's resident bytes (/proc/self/statm); 0 when unknown. */
size_t tm_rss_bytes(void);
/* Transparent huge pages are "always" on (not "madvise" or "never"). */
bool tm_thp_mode_always(void);

/* ---- the cores, for tests ------------------------------------------------------ */
#define TM_CG_MOUNT_MAX 256 /* a mount point, or a mount's root in its hierarchy */
#define TM_CG_PATH_MAX 512  /* a cgroup's path in its hierarchy */

/* Where the process's memory cgroups are: per hierarchy, the mount point,
 * the part of the hierarchy mounted there, and the process's cgroup. */
typedef struct tm_cg_hier {
  bool present;                /* the process is in such a cgroup */
  bool mount_found;            /* the mount point came from mountinfo */
  char mount[TM_CG_MOUNT_MAX]; /* e.g. "/sys/fs/cgroup" */
  char root[TM_CG_MOUNT_MAX];  /* "/", or the cgroup bind-mounted there */
  char path[TM_CG_PATH_MAX];   /* e.g. "/user.slice/app.scope" */
} tm_cg_hier;

typedef struct tm_cgroup_loc {
  tm_cg_hier v2; /* the unified hierarchy */
  tm_cg_hier v1; /* the v1 hierarchy with the memory controller */
} tm_cgroup_loc;

/* The standard mount points (/sys/fs/cgroup, /sys/fs/cgroup/memory) and no
 * cgroup yet. */
void tm_cgroup_loc_init(tm_cgroup_loc *loc);
/* Fill in the cgroups from the text of /proc/self/cgroup ("0::/path",
 * "4:memory:/path"); false if it names neither. */
bool tm_cgroup_parse_self(tm_cgroup_loc *loc, const char *text);
/* Fill in the mount points from the text of /proc/self/mountinfo; false
 * if it has no cgroup2 mount and no cgroup mount with the memory
 * controller (the standard ones stay). Parse /proc/self/cgroup first: of
 * several mounts of a hierarchy, one holding the process's cgroup wins. */
bool tm_cgroup_parse_mountinfo(tm_cgroup_loc *loc, const char *text);
/* Both, from the real files. */
bool tm_cgroup_locate(tm_cgroup_loc *loc);

typedef struct tm_memory_reading {
  size_t limit; /* the smallest limit; SIZE_MAX: none */
  size_t usage; /* usage of the cgroup holding it (or the own one); 0: unknown */
  unsigned hier;  /* cgroup version of the limit (without one, of the usage); 0: neither read */
  unsigned depth; /* levels above the process's cgroup where the limit is (0: its own) */
} tm_memory_reading;

/* Read the limits under sysfs_root ("" for the real system: it is prefixed
 * to the mount points, so a test can build a tree in a directory). */
void tm_memory_read_at(const char *sysfs_root, const tm_cgroup_loc *loc, tm_memory_reading *out);
/* The same for this process: one walk for both limit and usage. */
void tm_memory_read(tm_memory_reading *out);

#endif
