/* Helper for test_address_space.sh (not linked to tidemalloc: it is
 * preloaded). `addr_space vmsize` prints the process's VmSize in KiB after
 * one malloc. `addr_space fill` allocates 64 KiB blocks (each written) until
 * malloc fails, checks errno is ENOMEM, frees everything and allocates the
 * same number again, then small blocks: the allocator must recover once
 * memory is freed. It prints "fill: N blocks, ENOMEM, recovered". */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long vmsize_kb(void) {
  char line[256];
  long kb = -1;
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "VmSize:", 7) == 0) kb = strtol(line + 7, NULL, 10);
  fclose(f);
  return kb;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "vmsize") == 0) {
    void *volatile p = malloc(100);
    printf("%ld\n", vmsize_kb());
    free(p);
    return 0;
  }
  if (argc != 2 || strcmp(argv[1], "fill") != 0) return 2;
  enum { MAX = 1 << 16, BLOCK = 64 * 1024 };
  static void *v[MAX];
  int n = 0;
  int err = 0;
  for (; n < MAX; n++) {
    errno = 0;
    v[n] = malloc(BLOCK);
    if (!v[n]) {
      err = errno;
      break;
    }
    memset(v[n], 1, BLOCK);
  }
  if (n == MAX) {
    printf("fill: never failed after %d blocks\n", n);
    return 1;
  }
  if (err != ENOMEM) {
    printf("fill: NULL after %d blocks with errno %d, not ENOMEM\n", n, err);
    return 1;
  }
  for (int i = 0; i < n; i++) free(v[i]);
  for (int i = 0; i < n; i++) {
    v[i] = malloc(BLOCK);
    if (!v[i]) {
      printf("fill: after freeing %d blocks, only %d could be allocated again\n", n, i);
      return 1;
    }
  }
  for (int i = 0; i < n; i++) free(v[i]);
  for (int i = 0; i < 1000; i++) {
    void *s = malloc((size_t)(i % 500) + 1);
    if (!s) {
      printf("fill: a small block failed after recovery\n");
      return 1;
    }
    free(s);
  }
  printf("fill: %d blocks, ENOMEM, recovered\n", n);
  return 0;
}
