/* Unit tests of the pager's pressure readings (pager/pressure.c): parsing
 * /proc/self/cgroup and /proc/self/mountinfo text, the limit walk over
 * made-up cgroup v1 and v2 trees in a temporary directory, the PSI trigger
 * on a missing file and on the real /proc/pressure/memory, and the
 * resident size against /proc/self/status. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* nftw's FTW_DEPTH */
#endif
#include "config.h"

#include "pressure.h"

#include <check.h>
#include "checkrun.h"
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MiB ((size_t)1 << 20)
#define V1_NONE "9223372036854771712\n" /* what cgroup v1 reports for no limit */

/* /proc/self/cgroup and mountinfo of a hybrid machine (v1 memory, a v2
 * hierarchy with no controllers), as seen where these tests were written. */
static const char hybrid_cgroup[] =
    "9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n5:devices:/\n"
    "4:memory:/process_api/7214f309ee88f5eab87ca0d86e677558\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n";
static const char hybrid_mountinfo[] =
    "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
    "23 27 0:22 / /sys rw,relatime - sysfs sysfs rw\n"
    "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard\n"
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

/* ---- a made-up cgroup tree ------------------------------------------------------ */
/* Each test makes its tree under one directory that the (unchecked)
 * fixture, in the parent process, removes however the tests end. */
static char base[64], tree[128];

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

static void base_make(void) {
  strcpy(base, "/tmp/tm_pressure.XXXXXX");
  if (!mkdtemp(base)) base[0] = '\0';
}

static void base_remove(void) {
  if (base[0]) nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void tree_make(void) {
  ck_assert_msg(base[0] != '\0', "no temporary directory");
  snprintf(tree, sizeof tree, "%s/t.XXXXXX", base);
  ck_assert_ptr_nonnull(mkdtemp(tree));
}

static void tree_remove(void) { ck_assert_int_eq(nftw(tree, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0); }

/* Write content to tree/rel, making the directories on the way. */
static void put(const char *rel, const char *content) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", tree, rel);
  for (char *p = path + strlen(tree) + 1; (p = strchr(p, '/')) != NULL; p++) {
    *p = '\0';
    ck_assert_msg(mkdir(path, 0755) == 0 || errno == EEXIST, "mkdir %s: %s", path, strerror(errno));
    *p = '/';
  }
  FILE *f = fopen(path, "w");
  ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
  fputs(content, f);
  fclose(f);
}

static tm_cgroup_loc loc_of(const char *cgroup, const char *mountinfo) {
  tm_cgroup_loc loc;
  tm_cgroup_loc_init(&loc);
  tm_cgroup_parse_self(&loc, cgroup);
  tm_cgroup_parse_mountinfo(&loc, mountinfo);
  return loc;
}

static tm_memory_reading read_tree(const char *cgroup, const char *mountinfo) {
  tm_cgroup_loc loc = loc_of(cgroup, mountinfo);
  tm_memory_reading r;
  errno = 4242;
  tm_memory_read_at(tree, &loc, &r);
  ck_assert_int_eq(errno, 4242);
  return r;
}

static const char v2_mountinfo[] =
    "25 1 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n";
static const char v1_mountinfo[] =
    "35 31 0:32 / /sys/fs/cgroup/memory rw,nosuid shared:15 master:3 - cgroup cgroup rw,memory\n";

/* ---- /proc/self/cgroup ---------------------------------------------------------- */
START_TEST(t_parse_self_hybrid) {
  tm_cgroup_loc loc;
  tm_cgroup_loc_init(&loc);
  ck_assert(tm_cgroup_parse_self(&loc, hybrid_cgroup));
  ck_assert(loc.v1.present);
  ck_assert_str_eq(loc.v1.path, "/process_api/7214f309ee88f5eab87ca0d86e677558");
  ck_assert(loc.v2.present);
  ck_assert_str_eq(loc.v2.path, "/");
  ck_assert_str_eq(loc.v1.mount, "/sys/fs/cgroup/memory"); /* the standard ones until mountinfo */
  ck_assert_str_eq(loc.v2.mount, "/sys/fs/cgroup");
  ck_assert(!loc.v1.mount_found && !loc.v2.mount_found);
}
END_TEST

START_TEST(t_parse_self_v1_shapes) {
  tm_cgroup_loc loc;
  tm_cgroup_loc_init(&loc);
  /* memory among other controllers; name=, "memoryx" and a non-path do not count */
  ck_assert(tm_cgroup_parse_self(&loc, "12:name=systemd:/sys\n3:memoryx:/no\n"
                                       "5:cpuacct,memory,cpu:/docker/abc\n"));
  ck_assert(loc.v1.present);
  ck_assert(!loc.v2.present);
  ck_assert_str_eq(loc.v1.path, "/docker/abc");
  tm_cgroup_loc_init(&loc);
  ck_assert(!tm_cgroup_parse_self(&loc, "12:name=systemd:/sys\n3:memoryx:/no\n4:memory:relative\n"));
  ck_assert(!tm_cgroup_parse_self(&loc, ""));
  ck_assert(!tm_cgroup_parse_self(&loc, "garbage\n::\n"));
}
END_TEST

START_TEST(t_parse_self_v2) {
  tm_cgroup_loc loc;
  tm_cgroup_loc_init(&loc);
  /* no newline at the end */
  ck_assert(tm_cgroup_parse_self(&loc, "0::/user.slice/user-0.slice/session-3.scope"));
  ck_assert(loc.v2.present);
  ck_assert(!loc.v1.present);
  ck_assert_str_eq(loc.v2.path, "/user.slice/user-0.slice/session-3.scope");
  tm_cgroup_loc_init(&loc);
  ck_assert(tm_cgroup_parse_self(&loc, "0::/gone/child (deleted)\n"));
  ck_assert_str_eq(loc.v2.path, "/gone/child");
  /* "1::/x" is not the unified hierarchy (named v1 hierarchies have name=) */
  tm_cgroup_loc_init(&loc);
  ck_assert(!tm_cgroup_parse_self(&loc, "1::/x\n"));
  /* a path too long to walk is left out rather than cut */
  char text[TM_CG_PATH_MAX + 16] = "0::/";
  memset(text + 4, 'a', TM_CG_PATH_MAX);
  text[TM_CG_PATH_MAX + 4] = '\0';
  tm_cgroup_loc_init(&loc);
  ck_assert(!tm_cgroup_parse_self(&loc, text));
}
END_TEST

/* ---- /proc/self/mountinfo -------------------------------------------------------- */
START_TEST(t_parse_mountinfo) {
  tm_cgroup_loc loc = loc_of(hybrid_cgroup, "");
  ck_assert(tm_cgroup_parse_mountinfo(&loc, hybrid_mountinfo));
  ck_assert(loc.v2.mount_found && loc.v1.mount_found);
  ck_assert_str_eq(loc.v2.mount, "/sys/fs/cgroup/unified");
  ck_assert_str_eq(loc.v1.mount, "/sys/fs/cgroup/memory");
  ck_assert_str_eq(loc.v1.root, "/");

  /* pure v2, optional fields before the separator */
  tm_cgroup_loc_init(&loc);
  ck_assert(tm_cgroup_parse_mountinfo(&loc, v2_mountinfo));
  ck_assert(loc.v2.mount_found && !loc.v1.mount_found);
  ck_assert_str_eq(loc.v2.mount, "/sys/fs/cgroup");
  ck_assert_str_eq(loc.v1.mount, "/sys/fs/cgroup/memory"); /* the default stays */

  /* v1 memory co-mounted with cpu, an escaped space in the mount point,
   * a bind-mounted subtree as the mount's root */
  tm_cgroup_loc_init(&loc);
  ck_assert(tm_cgroup_parse_mountinfo(&loc, "40 31 0:37 / /cg/sd rw - cgroup cgroup rw,name=systemd\n"
                                            "50 31 0:40 /docker/abc /cg/cpu\\040mem rw,relatime shared:2 - "
                                            "cgroup cgroup rw,cpu,memory\n"));
  ck_assert(loc.v1.mount_found && !loc.v2.mount_found);
  ck_assert_str_eq(loc.v1.mount, "/cg/cpu mem");
  ck_assert_str_eq(loc.v1.root, "/docker/abc");

  /* nothing of ours: false, defaults kept */
  tm_cgroup_loc_init(&loc);
  ck_assert(!tm_cgroup_parse_mountinfo(&loc, "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
                                             "1 2 3:4 / /broken line\n\n"));
  ck_assert_str_eq(loc.v2.mount, "/sys/fs/cgroup");
}
END_TEST

/* Of several mounts of one hierarchy, the one holding our cgroup. */
START_TEST(t_parse_mountinfo_choice) {
  static const char two[] = "60 1 0:40 /other /mnt/a rw - cgroup2 cgroup2 rw\n"
                            "61 1 0:40 / /mnt/b rw - cgroup2 cgroup2 rw\n"
                            "62 1 0:40 /docker /mnt/c rw - cgroup2 cgroup2 rw\n";
  tm_cgroup_loc loc = loc_of("0::/docker/abc\n", two);
  ck_assert_str_eq(loc.v2.mount, "/mnt/b");
  loc = loc_of("0::/other/x\n", two);
  ck_assert_str_eq(loc.v2.mount, "/mnt/a");
  loc = loc_of("0::/elsewhere\n", "62 1 0:40 /docker /mnt/c rw - cgroup2 cgroup2 rw\n");
  ck_assert_str_eq(loc.v2.mount, "/mnt/c"); /* the only one there is */
}
END_TEST

/* ---- limit walks over made-up trees -------------------------------------------- */
/* v2: limits at several levels, "max" meaning none; the smallest is the
 * parent's memory.max, and the usage is the parent's. */
START_TEST(t_v2_tree) {
  tree_make();
  put("sys/fs/cgroup/memory.pressure", "");
  put("sys/fs/cgroup/a/memory.max", "max\n");
  put("sys/fs/cgroup/a/memory.high", "max\n");
  put("sys/fs/cgroup/a/memory.current", "900000000\n");
  put("sys/fs/cgroup/a/b/memory.max", "1073741824\n");
  put("sys/fs/cgroup/a/b/memory.high", "max\n");
  put("sys/fs/cgroup/a/b/memory.current", "300000000\n");
  put("sys/fs/cgroup/a/b/c/memory.max", "max\n");
  put("sys/fs/cgroup/a/b/c/memory.high", "2147483648\n");
  put("sys/fs/cgroup/a/b/c/memory.current", "1234567\n");
  tm_memory_reading r = read_tree("0::/a/b/c\n", v2_mountinfo);
  ck_assert_uint_eq(r.limit, 1073741824);
  ck_assert_uint_eq(r.usage, 300000000);
  ck_assert_uint_eq(r.hier, 2);
  ck_assert_uint_eq(r.depth, 1);

  /* memory.high below memory.max at the grandparent wins */
  put("sys/fs/cgroup/a/memory.high", "536870912\n");
  r = read_tree("0::/a/b/c\n", v2_mountinfo);
  ck_assert_uint_eq(r.limit, 536870912);
  ck_assert_uint_eq(r.usage, 900000000);
  ck_assert_uint_eq(r.depth, 2);

  /* a cgroup deeper down, with its own smaller limit */
  put("sys/fs/cgroup/a/b/c/memory.max", "104857600\n");
  r = read_tree("0::/a/b/c/\n", v2_mountinfo); /* a trailing slash changes nothing */
  ck_assert_uint_eq(r.limit, 104857600);
  ck_assert_uint_eq(r.usage, 1234567);
  ck_assert_uint_eq(r.depth, 0);

  /* equal limits: the ancestor's (it holds more) */
  put("sys/fs/cgroup/a/b/memory.max", "104857600\n");
  r = read_tree("0::/a/b/c\n", v2_mountinfo);
  ck_assert_uint_eq(r.limit, 104857600);
  ck_assert_uint_eq(r.usage, 300000000);

  /* no limit anywhere: SIZE_MAX, and the own cgroup's usage */
  put("sys/fs/cgroup/a/memory.high", "max\n");
  put("sys/fs/cgroup/a/b/memory.max", "max\n");
  put("sys/fs/cgroup/a/b/c/memory.max", "max\n");
  put("sys/fs/cgroup/a/b/c/memory.high", "max\n");
  r = read_tree("0::/a/b/c\n", v2_mountinfo);
  ck_assert_uint_eq(r.limit, SIZE_MAX);
  ck_assert_uint_eq(r.usage, 1234567);
  ck_assert_uint_eq(r.hier, 2);

  /* the root cgroup has no memory.* files at all */
  r = read_tree("0::/\n", v2_mountinfo);
  ck_assert_uint_eq(r.limit, SIZE_MAX);
  ck_assert_uint_eq(r.usage, 0);
  ck_assert_uint_eq(r.hier, 0);
  tree_remove();
}
END_TEST

/* v1: the "no limit" value, soft limits, the root's limit, use_hierarchy. */
START_TEST(t_v1_tree) {
  tree_make();
  put("sys/fs/cgroup/memory/memory.limit_in_bytes", V1_NONE);
  put("sys/fs/cgroup/memory/memory.soft_limit_in_bytes", V1_NONE);
  put("sys/fs/cgroup/memory/memory.usage_in_bytes", "5000000000\n");
  put("sys/fs/cgroup/memory/memory.use_hierarchy", "1\n");
  put("sys/fs/cgroup/memory/x/memory.limit_in_bytes", V1_NONE);
  put("sys/fs/cgroup/memory/x/memory.soft_limit_in_bytes", "314572800\n");
  put("sys/fs/cgroup/memory/x/memory.usage_in_bytes", "200000000\n");
  put("sys/fs/cgroup/memory/x/memory.use_hierarchy", "1\n");
  put("sys/fs/cgroup/memory/x/y/memory.limit_in_bytes", "419430400\n");
  put("sys/fs/cgroup/memory/x/y/memory.soft_limit_in_bytes", V1_NONE);
  put("sys/fs/cgroup/memory/x/y/memory.usage_in_bytes", "8724480\n");
  put("sys/fs/cgroup/memory/x/y/memory.use_hierarchy", "1\n");
  tm_memory_reading r = read_tree("4:memory:/x/y\n0::/\n", hybrid_mountinfo);
  ck_assert_uint_eq(r.limit, 314572800);
  ck_assert_uint_eq(r.usage, 200000000);
  ck_assert_uint_eq(r.hier, 1);
  ck_assert_uint_eq(r.depth, 1);

  /* without use_hierarchy at x, x's limits do not cover y */
  put("sys/fs/cgroup/memory/x/memory.use_hierarchy", "0\n");
  r = read_tree("4:memory:/x/y\n0::/\n", hybrid_mountinfo);
  ck_assert_uint_eq(r.limit, 419430400);
  ck_assert_uint_eq(r.usage, 8724480);
  ck_assert_uint_eq(r.depth, 0);

  /* the "no limit" value everywhere: none, and the own usage */
  put("sys/fs/cgroup/memory/x/memory.use_hierarchy", "1\n");
  put("sys/fs/cgroup/memory/x/memory.soft_limit_in_bytes", V1_NONE);
  put("sys/fs/cgroup/memory/x/y/memory.limit_in_bytes", V1_NONE);
  r = read_tree("4:memory:/x/y\n0::/\n", hybrid_mountinfo);
  ck_assert_uint_eq(r.limit, SIZE_MAX);
  ck_assert_uint_eq(r.usage, 8724480);
  ck_assert_uint_eq(r.hier, 1);

  /* a limit at the top of the hierarchy applies too */
  put("sys/fs/cgroup/memory/memory.limit_in_bytes", "8589934592\n");
  r = read_tree("4:memory:/x/y\n0::/\n", hybrid_mountinfo);
  ck_assert_uint_eq(r.limit, 8589934592u);
  ck_assert_uint_eq(r.usage, 5000000000u);
  ck_assert_uint_eq(r.depth, 2);

  /* the same from a pure v1 mountinfo (shared/master optional fields) */
  r = read_tree("4:memory:/x/y\n", v1_mountinfo);
  ck_assert_uint_eq(r.limit, 8589934592u);

  /* no memory line in /proc/self/cgroup: nothing read */
  r = read_tree("1:cpu:/x\n", hybrid_mountinfo);
  ck_assert_uint_eq(r.limit, SIZE_MAX);
  ck_assert_uint_eq(r.hier, 0);
  tree_remove();
}
END_TEST

/* Both hierarchies (hybrid with memory on both sides is not possible, but
 * the walk takes the smaller regardless), and a bind-mounted subtree. */
START_TEST(t_both_and_bind_mount) {
  tree_make();
  put("sys/fs/cgroup/unified/s/memory.max", "700000000\n");
  put("sys/fs/cgroup/unified/s/memory.current", "1000\n");
  put("sys/fs/cgroup/memory/m/memory.limit_in_bytes", "600000000\n");
  put("sys/fs/cgroup/memory/m/memory.usage_in_bytes", "2000\n");
  tm_memory_reading r = read_tree("4:memory:/m\n0::/s\n", hybrid_mountinfo);
  ck_assert_uint_eq(r.limit, 600000000);
  ck_assert_uint_eq(r.usage, 2000);
  ck_assert_uint_eq(r.hier, 1);
  put("sys/fs/cgroup/unified/s/memory.high", "500000000\n");
  r = read_tree("4:memory:/m\n0::/s\n", hybrid_mountinfo);
  ck_assert_uint_eq(r.limit, 500000000);
  ck_assert_uint_eq(r.usage, 1000);
  ck_assert_uint_eq(r.hier, 2);

  /* a container that sees /docker/abc mounted at /sys/fs/cgroup/memory:
   * its cgroup /docker/abc/job is the directory job under the mount */
  static const char bind[] = "35 31 0:32 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n";
  put("sys/fs/cgroup/memory/memory.limit_in_bytes", "400000000\n");
  put("sys/fs/cgroup/memory/job/memory.limit_in_bytes", V1_NONE);
  put("sys/fs/cgroup/memory/job/memory.usage_in_bytes", "3000\n");
  r = read_tree("4:memory:/docker/abc/job\n", bind);
  ck_assert_uint_eq(r.limit, 400000000);
  ck_assert_uint_eq(r.depth, 1);
  /* outside the mounted part: only the mount point is visible */
  r = read_tree("4:memory:/elsewhere/job\n", bind);
  ck_assert_uint_eq(r.limit, 400000000);
  ck_assert_uint_eq(r.depth, 0);
  /* ".." (another cgroup namespace) is never followed */
  r = read_tree("4:memory:/docker/abc/../../m\n", bind);
  ck_assert_uint_eq(r.limit, 400000000);
  ck_assert_uint_eq(r.depth, 0);

  /* garbage in a limit file is no limit */
  put("sys/fs/cgroup/memory/memory.limit_in_bytes", "lots\n");
  r = read_tree("4:memory:/docker/abc/job\n", bind);
  ck_assert_uint_eq(r.limit, SIZE_MAX);
  ck_assert_uint_eq(r.usage, 3000);
  tree_remove();
}
END_TEST

/* The real thing: whatever this machine has, the answers hang together. */
START_TEST(t_real_limits) {
  tm_cgroup_loc loc;
  errno = 777;
  bool found = tm_cgroup_locate(&loc);
  ck_assert_int_eq(errno, 777);
  if (access("/proc/self/cgroup", R_OK) == 0) ck_assert(found);
  size_t limit = tm_memory_limit(), usage = tm_memory_usage();
  ck_assert_int_eq(errno, 777);
  tm_memory_reading r;
  tm_memory_read(&r);
  ck_assert_int_eq(errno, 777);
  ck_assert_uint_gt(limit, 0);
  ck_assert_uint_eq(r.limit, limit);
  if (limit != SIZE_MAX) ck_assert_uint_gt(usage, 0);
  fprintf(stderr, "test_pressure: v2 %s%s at %s, v1 memory %s%s at %s: limit %zu, usage %zu (v%u, depth %u)\n",
          loc.v2.present ? "" : "(absent) ", loc.v2.path, loc.v2.mount, loc.v1.present ? "" : "(absent) ",
          loc.v1.path, loc.v1.mount, limit, usage, r.hier, r.depth);
}
END_TEST

/* ---- PSI ------------------------------------------------------------------------- */
START_TEST(t_psi_missing) {
  errno = 555;
  ck_assert_int_eq(tm_psi_open_at("/nonexistent/pressure/memory", 150000, 1000000), -1);
  ck_assert_int_eq(errno, 555);
  /* a write that fails for another reason: no retry, nothing left open */
  int before = open("/dev/null", O_RDONLY);
  ck_assert_int_ge(before, 0);
  close(before);
  ck_assert_int_eq(tm_psi_open_at("/dev/full", 150000, 2000000), -1);
  ck_assert_int_eq(errno, 555);
  int after = open("/dev/null", O_RDONLY);
  ck_assert_int_eq(after, before);
  close(after);
  tm_psi_close(-1);
  ck_assert_int_eq(errno, 555);
}
END_TEST

static void psi_check(unsigned stall_us, unsigned window_us) {
  int fd = tm_psi_open(stall_us, window_us);
  ck_assert_msg(fd >= 0, "trigger some %u %u refused", stall_us, window_us);
  ck_assert_int_ne(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
  /* without an armed trigger the kernel reports POLLERR */
  struct pollfd p = {fd, POLLPRI, 0};
  int rc = poll(&p, 1, 0);
  ck_assert_int_ge(rc, 0);
  ck_assert_int_eq(p.revents & (POLLERR | POLLNVAL | POLLHUP), 0);
  tm_psi_close(fd);
}

START_TEST(t_psi_real) {
  if (access("/proc/pressure/memory", F_OK) != 0) return; /* no PSI here */
  errno = 321;
  psi_check(150000, 1000000);  /* 1 s: unprivileged, retried with 2 s */
  psi_check(300000, 2000000);  /* what an unprivileged process may arm */
  psi_check(50, 100);          /* window below the kernel's 500 ms: retried */
  psi_check(5000000, 20000000); /* above its 10 s: retried at 10 s */
  ck_assert_int_eq(errno, 321);
  ck_assert_int_eq(tm_psi_open(0, 2000000), -1); /* no stall: refused both times */
  ck_assert_int_eq(errno, 321);
}
END_TEST

/* ---- resident size -------------------------------------------------------------- */
static size_t vm_rss(void) {
  FILE *f = fopen("/proc/self/status", "r");
  ck_assert_ptr_nonnull(f);
  char line[256];
  size_t kb = 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %zu kB", &kb) == 1) break;
  fclose(f);
  ck_assert_uint_gt(kb, 0);
  return kb * 1024;
}

static void assert_near(size_t a, size_t b) {
  size_t d = a > b ? a - b : b - a;
  ck_assert_msg(d <= 2 * MiB + b / 10, "tm_rss_bytes %zu, VmRSS %zu", a, b);
}

START_TEST(t_rss) {
  errno = 99;
  size_t before = tm_rss_bytes();
  ck_assert_int_eq(errno, 99);
  assert_near(before, vm_rss());
  size_t len = 16 * MiB;
  char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ck_assert(p != MAP_FAILED);
  memset(p, 1, len);
  size_t after = tm_rss_bytes();
  assert_near(after, vm_rss());
  ck_assert_uint_ge(after, before + len - 2 * MiB);
  munmap(p, len);
}
END_TEST

int main(void) {
  Suite *su = suite_create("pressure");
  TCase *tc = tcase_create("pressure");
  tcase_set_timeout(tc, 30);
  tcase_add_unchecked_fixture(tc, base_make, base_remove);
  tcase_add_test(tc, t_parse_self_hybrid);
  tcase_add_test(tc, t_parse_self_v1_shapes);
  tcase_add_test(tc, t_parse_self_v2);
  tcase_add_test(tc, t_parse_mountinfo);
  tcase_add_test(tc, t_parse_mountinfo_choice);
  tcase_add_test(tc, t_v2_tree);
  tcase_add_test(tc, t_v1_tree);
  tcase_add_test(tc, t_both_and_bind_mount);
  tcase_add_test(tc, t_real_limits);
  tcase_add_test(tc, t_psi_missing);
  tcase_add_test(tc, t_psi_real);
  tcase_add_test(tc, t_rss);
  suite_add_tcase(su, tc);
  return check_run(su, CK_FORK_GETENV);
}
