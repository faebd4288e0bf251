// cxx_forms: exercises every form of C++ new/delete plus container churn and
// prints one deterministic result line:
//   cxx_forms: forms=<n> errors=0 checksum=<hex>
// It is NOT linked against tidemalloc; test_cxx.sh runs it once plainly and
// once with LD_PRELOAD=libtidemalloc.so.  With CXX_FORMS_EXPECT_TIDEMALLOC=1
// it also proves (through dlsym) that its allocations land in tidemalloc and
// prints "tide-check: ok".
#include <dlfcn.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#include "tidemalloc.h"

namespace {

int g_errors = 0;
int g_forms = 0;
std::uint64_t g_sum = 1469598103934665603ull;

void fail(const char *what, const void *p) {
  std::fprintf(stderr, "cxx_forms: FAIL %s (%p)\n", what, p);
  g_errors++;
}

void mix(std::uint64_t v) {
  g_sum ^= v;
  g_sum *= 1099511628211ull;
}

// Opaque to the optimiser so allocations cannot be elided.
__attribute__((noinline)) void use(void *p, std::size_t n, unsigned char tag) {
  __asm__ volatile("" : : "r"(p) : "memory");
  if (!p) {
    fail("null pointer from a throwing new", p);
    return;
  }
  unsigned char *c = static_cast<unsigned char *>(p);
  for (std::size_t i = 0; i < n; i++) c[i] = static_cast<unsigned char>(tag + i * 7);
  __asm__ volatile("" : : "r"(p) : "memory");
  for (std::size_t i = 0; i < n; i++)
    if (c[i] != static_cast<unsigned char>(tag + i * 7)) {
      fail("content check", p);
      return;
    }
  mix(n * 131 + tag);
}

void aligned(const void *p, std::size_t a, const char *what) {
  if (reinterpret_cast<std::uintptr_t>(p) % a != 0) fail(what, p);
}

std::size_t opaque(std::size_t n) {
  __asm__ volatile("" : "+r"(n));
  return n;
}

struct alignas(64) A64 {
  unsigned char b[100];
};
struct alignas(256) A256 {
  unsigned char b[300];
};
struct alignas(4096) A4096 {
  unsigned char b[5000];
};
struct Plain {
  long v[13];
};

void basic_forms() {
  // new / delete
  int *i = new int(42);
  use(i, sizeof *i, 1);
  delete i;
  // new[] / delete[]
  int *ia = new int[1000];
  use(ia, 1000 * sizeof(int), 2);
  delete[] ia;
  std::string *s = new std::string(300, 'q');
  mix(s->size());
  delete s;
  g_forms += 3;

  // nothrow
  long *nl = new (std::nothrow) long(7);
  if (!nl) fail("nothrow new returned null", nl);
  use(nl, sizeof *nl, 3);
  delete nl;
  long *nla = new (std::nothrow) long[500];
  if (!nla) fail("nothrow new[] returned null", nla);
  use(nla, 500 * sizeof(long), 4);
  delete[] nla;
  g_forms += 2;

  // sized delete: implicit (complete type) and explicit
  Plain *pl = new Plain;
  use(pl, sizeof *pl, 5);
  delete pl;  // operator delete(void*, size_t) with -fsized-deallocation
  void *raw = ::operator new(777);
  use(raw, 777, 6);
  ::operator delete(raw, 777);
  void *rawa = ::operator new[](1234);
  use(rawa, 1234, 7);
  ::operator delete[](rawa, 1234);
  g_forms += 3;

  // aligned new via over-aligned types
  A64 *a64 = new A64;
  aligned(a64, 64, "alignas(64) new");
  use(a64, sizeof *a64, 8);
  delete a64;
  A64 *a64v = new A64[7];
  aligned(a64v, 64, "alignas(64) new[]");
  use(a64v, 7 * sizeof(A64), 9);
  delete[] a64v;
  A256 *a256 = new A256;
  aligned(a256, 256, "alignas(256) new");
  use(a256, sizeof *a256, 10);
  delete a256;
  A4096 *a4k = new A4096[3];
  aligned(a4k, 4096, "alignas(4096) new[]");
  use(a4k, 3 * sizeof(A4096), 11);
  delete[] a4k;
  A4096 *a4n = new (std::nothrow) A4096;
  if (!a4n) fail("nothrow aligned new returned null", a4n);
  aligned(a4n, 4096, "nothrow alignas(4096) new");
  use(a4n, sizeof *a4n, 12);
  delete a4n;
  g_forms += 5;

  // explicit aligned operator new/delete, all variants
  for (std::size_t a = 16; a <= 65536; a <<= 1) {
    std::align_val_t al{a};
    void *p = ::operator new(1000, al);
    aligned(p, a, "operator new(size, align)");
    use(p, 1000, 13);
    ::operator delete(p, al);

    p = ::operator new(3000, al);
    aligned(p, a, "operator new(size, align) + sized delete");
    use(p, 3000, 14);
    ::operator delete(p, 3000, al);  // sized + aligned

    p = ::operator new[](5000, al);
    aligned(p, a, "operator new[](size, align)");
    use(p, 5000, 15);
    ::operator delete[](p, 5000, al);

    p = ::operator new[](64, al);
    aligned(p, a, "operator new[](size, align)");
    use(p, 64, 16);
    ::operator delete[](p, al);

    p = ::operator new(100, al, std::nothrow);
    if (!p) fail("aligned nothrow new returned null", p);
    aligned(p, a, "operator new(size, align, nothrow)");
    use(p, 100, 17);
    ::operator delete(p, al, std::nothrow);

    p = ::operator new[](200, al, std::nothrow);
    if (!p) fail("aligned nothrow new[] returned null", p);
    aligned(p, a, "operator new[](size, align, nothrow)");
    use(p, 200, 18);
    ::operator delete[](p, al, std::nothrow);
    g_forms += 6;
  }

  // impossible sizes: throwing forms throw, nothrow forms return null
  const std::size_t huge = opaque(SIZE_MAX / 2);
  bool threw = false;
  try {
    void *p = ::operator new(huge);
    fail("operator new(SIZE_MAX/2) returned", p);
  } catch (const std::bad_alloc &) {
    threw = true;
  }
  if (!threw) fail("operator new(SIZE_MAX/2) did not throw", nullptr);
  threw = false;
  try {
    void *p = ::operator new(huge, std::align_val_t{64});
    fail("aligned operator new(SIZE_MAX/2) returned", p);
  } catch (const std::bad_alloc &) {
    threw = true;
  }
  if (!threw) fail("aligned operator new(SIZE_MAX/2) did not throw", nullptr);
  void *np = ::operator new(huge, std::nothrow);
  if (np) fail("nothrow operator new(SIZE_MAX/2) returned non-null", np);
  np = ::operator new[](huge, std::align_val_t{256}, std::nothrow);
  if (np) fail("nothrow aligned operator new[](SIZE_MAX/2) returned non-null", np);
  g_forms += 4;
}

void container_churn() {
  std::vector<std::string> words;
  for (int i = 0; i < 60000; i++) {
    std::string w = "w" + std::to_string(i * 7919 % 100003);
    w.append(static_cast<std::size_t>(i % 40), static_cast<char>('a' + i % 26));
    words.push_back(std::move(w));
  }
  std::map<int, std::string> m;
  for (std::size_t i = 0; i < words.size(); i++) m[static_cast<int>(i * 31 % 50021)] = words[i];
  std::unordered_map<std::string, std::vector<int>> um;
  for (std::size_t i = 0; i < words.size(); i += 3) {
    auto &v = um[words[i]];
    for (int k = 0; k < static_cast<int>(i % 50); k++) v.push_back(k * static_cast<int>(i));
  }
  for (int round = 0; round < 5; round++) {
    for (auto it = m.begin(); it != m.end();) {
      if ((it->first + round) % 3 == 0)
        it = m.erase(it);
      else
        ++it;
    }
    for (int i = 0; i < 10000; i++) m[i * 5 + round] = std::string(static_cast<std::size_t>(i % 200), 'm');
    std::vector<std::vector<double>> vv(2000);
    for (std::size_t i = 0; i < vv.size(); i++) vv[i].resize(i % 300, 1.5);
    double acc = 0;
    for (auto &v : vv)
      for (double d : v) acc += d;
    mix(static_cast<std::uint64_t>(acc));
  }
  for (auto &kv : m) {
    mix(static_cast<std::uint64_t>(kv.first));
    mix(kv.second.size());
  }
  std::uint64_t usum = 0;  // order-independent for the unordered map
  for (auto &kv : um) {
    std::uint64_t x = kv.first.size() * 1000003u;
    for (int v : kv.second) x += static_cast<std::uint64_t>(v);
    usum += x;
  }
  mix(usum);
  std::string big;
  for (int i = 0; i < 100000; i++) big += static_cast<char>('0' + i % 10);
  mix(big.size());
  mix(static_cast<std::uint64_t>(big[77777]));
  g_forms += 1;
}

int tide_check() {
  using version_fn = const char *(*)();
  using stats_fn = void (*)(struct tide_stats *);
  auto ver = reinterpret_cast<version_fn>(dlsym(RTLD_DEFAULT, "tide_version"));
  auto stats = reinterpret_cast<stats_fn>(dlsym(RTLD_DEFAULT, "tide_get_stats"));
  if (!ver || !stats) {
    std::printf("tide-check: FAIL tidemalloc is not loaded (tide_version=%p)\n",
                reinterpret_cast<void *>(ver));
    return 1;
  }
  struct tide_stats s0, s1, s2;
  stats(&s0);
  const std::size_t n = 262144;  // x 200 bytes = 50 MiB
  char **v = new char *[n];
  for (std::size_t i = 0; i < n; i++) {
    v[i] = new char[200];
    v[i][0] = static_cast<char>(i);
    v[i][199] = static_cast<char>(i);
  }
  stats(&s1);
  for (std::size_t i = 0; i < n; i++) {
    if (v[i][0] != static_cast<char>(i) || v[i][199] != static_cast<char>(i)) {
      std::printf("tide-check: FAIL block %zu corrupted\n", i);
      return 1;
    }
    delete[] v[i];
  }
  delete[] v;
  const std::size_t MiB = 1 << 20;
  if (s1.span_bytes < s0.span_bytes + 40 * MiB) {
    std::printf("tide-check: FAIL span_bytes grew only from %zu to %zu after 50 MiB of new char[200]\n",
                s0.span_bytes, s1.span_bytes);
    return 1;
  }
  // aligned new is implemented by libstdc++ on top of aligned_alloc /
  // posix_memalign / memalign: those must be tidemalloc's too
  Dl_info tide_obj;
  if (!dladdr(reinterpret_cast<void *>(ver), &tide_obj) || !tide_obj.dli_fname) {
    std::printf("tide-check: FAIL dladdr(tide_version) failed\n");
    return 1;
  }
  static const char *const syms[] = {"malloc", "free", "aligned_alloc", "posix_memalign",
                                     "memalign", "realloc", "calloc", "malloc_usable_size"};
  for (const char *sym : syms) {
    Dl_info info;
    void *addr = dlsym(RTLD_DEFAULT, sym);
    if (!addr || !dladdr(addr, &info) || !info.dli_fname ||
        std::strcmp(info.dli_fname, tide_obj.dli_fname) != 0) {
      std::printf("tide-check: FAIL %s does not resolve to tidemalloc (%s)\n", sym,
                  addr && dladdr(addr, &info) && info.dli_fname ? info.dli_fname : "?");
      return 1;
    }
  }
  std::vector<A4096 *> av;
  for (int i = 0; i < 2000; i++) av.push_back(new A4096);
  stats(&s2);
  for (auto p : av) delete p;
  if (s2.span_bytes + s2.large_bytes + s2.huge_bytes == 0) {
    std::printf("tide-check: FAIL tidemalloc reports no memory in use with 2000 aligned objects\n");
    return 1;
  }
  std::printf("tide-check: ok version=%s\n", ver());
  return 0;
}

}  // namespace

int main() {
  basic_forms();
  container_churn();
  // repeat the forms a few times for churn on freed memory
  for (int r = 0; r < 20; r++) basic_forms();
  std::printf("cxx_forms: forms=%d errors=%d checksum=%016llx\n", g_forms, g_errors,
              static_cast<unsigned long long>(g_sum));
  std::fflush(stdout);
  int rc = g_errors ? 1 : 0;
  const char *e = std::getenv("CXX_FORMS_EXPECT_TIDEMALLOC");
  if (e && std::strcmp(e, "1") == 0 && tide_check() != 0) rc = 1;
  return rc;
}
