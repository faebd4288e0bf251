/* Prints what early_lib's constructor found, then allocates a little more. */
#include <stdio.h>
#include <stdlib.h>

const char *early_result(void);

int main(void) {
  void *p = malloc(100);
  if (!p) return 1;
  free(p);
  puts(early_result());
  return 0;
}
