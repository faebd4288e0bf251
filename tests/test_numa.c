/* NUMA placement on an injected two-node topology: the test re-executes
 * itself with tests/.libs/libfakenuma.so preloaded (fakenuma.c), in which
 * each thread says which node it runs on and mbind() only records. Then:
 * every segment a thread allocates from is bound to its own node, and a
 * thread on node 1 does not take the slices a thread on node 0 freed. */
#define _GNU_SOURCE
#include <check.h>
#include "checkrun.h"
#include <dlfcn.h>
#include <pthread.h>
#include <tidemalloc.h>

#include "testutil.h"

static void (*set_node)(unsigned);
static int (*node_of)(const void *);

enum { NLARGE = 150, LARGE = 48 * 1024, NSMALL = 4000 };
struct owner {
  unsigned node;
  void *large[NLARGE];
  void *small[NSMALL];
  int wrong; /* blocks on a segment bound elsewhere */
  int unbound;
};

static void *allocate_on(void *arg) {
  struct owner *o = arg;
  set_node(o->node);
  for (int i = 0; i < NLARGE; i++) {
    o->large[i] = malloc(LARGE);
    memset(o->large[i], 1, LARGE);
  }
  for (int i = 0; i < NSMALL; i++) {
    o->small[i] = malloc(16 + (size_t)(i % 64) * 16);
    memset(o->small[i], 2, 16);
  }
  for (int i = 0; i < NLARGE + NSMALL; i++) {
    void *p = i < NLARGE ? o->large[i] : o->small[i - NLARGE];
    int n = node_of(p);
    /* a segment mapped before tidemalloc knew the topology (in libnuma's
     * own constructor, say) was never bound: it is node 0's */
    if (n < 0) {
      o->unbound++;
      n = 0;
    }
    if ((unsigned)n != o->node) o->wrong++;
  }
  return NULL;
}

static void *free_all(void *arg) {
  struct owner *o = arg;
  for (int i = 0; i < NLARGE; i++) free(o->large[i]);
  for (int i = 0; i < NSMALL; i++) free(o->small[i]);
  return NULL;
}

static int run_placement(void) {
  set_node = (void (*)(unsigned))dlsym(RTLD_DEFAULT, "fakenuma_set_node");
  node_of = (int (*)(const void *))dlsym(RTLD_DEFAULT, "fakenuma_node_of");
  if (!set_node || !node_of) {
    printf("FAIL: libfakenuma.so is not preloaded\n");
    return 1;
  }
  static struct owner a = {.node = 0}, b = {.node = 1}, c = {.node = 1};
  pthread_t t;
  pthread_create(&t, NULL, allocate_on, &a);
  pthread_join(t, NULL);
  pthread_create(&t, NULL, allocate_on, &b);
  pthread_join(t, NULL);
  int bad = 0;
  struct tide_stats st;
  tide_get_stats(&st);
  if (st.numa_nodes != 2) {
    printf("FAIL: tidemalloc sees %d nodes, not 2\n", st.numa_nodes);
    bad = 1;
  }
  for (struct owner *o = &a; o; o = o == &a ? &b : NULL)
    if (o->wrong) {
      printf("FAIL: node %u: %d blocks on another node's segments, %d on segments never bound\n", o->node, o->wrong,
             o->unbound);
      bad = 1;
    }
  /* node 0's memory freed (by a node-0 thread); a new thread on node 1
   * still gets node-1 memory only */
  set_node(0);
  pthread_create(&t, NULL, free_all, &a);
  pthread_join(t, NULL);
  pthread_create(&t, NULL, allocate_on, &c);
  pthread_join(t, NULL);
  if (c.wrong) {
    printf("FAIL: after node 0 freed, node 1 got %d blocks on node-0 segments (%d unbound)\n", c.wrong, c.unbound);
    bad = 1;
  }
  return bad;
}

START_TEST(t_two_nodes) {
  const char *dir = getenv("TIDETEST_BUILDDIR");
  char shim[4096], self[4096];
  snprintf(shim, sizeof shim, "LD_PRELOAD=%s/.libs/libfakenuma.so", dir ? dir : ".");
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  ck_assert_int_gt(n, 0);
  self[n] = 0;
  const char *env[] = {shim, NULL};
  char text[4096];
  int status;
  ck_assert_int_eq(run_self(self, "placement", env, 1, text, sizeof text, &status, 60), 0);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "placement (status 0x%x):\n%s", status, text);
}
END_TEST

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "placement") == 0) return run_placement();
  Suite *su = suite_create("numa");
  TCase *tc = tcase_create("numa");
  tcase_set_timeout(tc, 90);
  tcase_add_test(tc, t_two_nodes);
  suite_add_tcase(su, tc);
  return check_run(su, CK_FORK_GETENV);
}
