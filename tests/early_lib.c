/* A library whose constructor allocates before main: plain blocks, a thread
 * that allocates and exits, dlsym/dlerror (which allocate inside libc),
 * stdio. With tidemalloc preloaded this runs early in process start-up. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char early_result_text[256];

static void *early_thread(void *arg) {
  char **out = arg;
  char *blocks[64];
  for (int i = 0; i < 64; i++) {
    blocks[i] = malloc((size_t)(i + 1) * 24);
    if (!blocks[i]) return NULL;
    memset(blocks[i], i, (size_t)(i + 1) * 24);
  }
  for (int i = 0; i < 63; i++) free(blocks[i]);
  *out = blocks[63]; /* freed by the constructor, after this thread exited */
  return NULL;
}

__attribute__((constructor)) static void early_init(void) {
  int ok = 1;
  char *s = strdup("early");
  void *big = malloc(3 << 20);
  ok &= s != NULL && big != NULL;
  pthread_t t;
  char *from_thread = NULL;
  ok &= pthread_create(&t, NULL, early_thread, &from_thread) == 0;
  ok &= pthread_join(t, NULL) == 0;
  ok &= from_thread != NULL && (unsigned char)from_thread[0] == 63;
  free(from_thread);
  ok &= dlsym(RTLD_DEFAULT, "no_such_symbol_anywhere") == NULL;
  const char *err = dlerror();
  ok &= err != NULL && strstr(err, "no_such_symbol_anywhere") != NULL;
  snprintf(early_result_text, sizeof early_result_text, "early: %s tidemalloc=%s", ok ? "ok" : "FAILED",
           dlsym(RTLD_DEFAULT, "tide_version") ? "yes" : "no");
  free(big);
  free(s);
}

const char *early_result(void) { return early_result_text; }
