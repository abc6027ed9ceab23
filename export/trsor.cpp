// TrSOR as three fused passes over the image, for the CPU server (built and called by export/trsor_native.py).
//
// slsp/trsor.py writes TrSOR as ~80 tensor operators so it exports to ONNX; each writes a tensor of about the
// image's float32 size. Here the same arithmetic runs row by row with the intermediates in small ring buffers:
//   1. luma -> squared central differences -> row sums -> column sums = xi (the only full-size intermediate),
//      and the log-domain mean that starts the noise estimate, while each xi row is still in cache;
//   2. the fixed number of re-estimation passes (count and sum of xi <= threshold);
//   3. the mask, its p x p dilation into Phi (one byte a pixel) and Phi's count per candidate tile.
// Ranking the tiles and gathering the K crops are left to the caller (a few thousand tiles, K crops).
// slsp_box_level builds the coarser pyramid levels (f x f block means) in one threaded pass each: built in NumPy
// they cost 20x the kernel itself (issue 41).
// Sums are taken in double; xi and the thresholds in float32 as in PyTorch. The parity gate compares
// every output with PyTorch eager before an artifact is written.

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

// Natural log of a positive normal float without a call, so loops over it vectorize (Cephes logf: x = m 2^e,
// m in [sqrt(1/2), sqrt(2)), degree-9 polynomial). Checked on 10^7 log-uniform values in [1e-3, 1e7]: at most
// 1 ulp from the correctly rounded log.
inline float log_positive(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  const int32_t expo = static_cast<int32_t>(bits >> 23), mant = static_cast<int32_t>(bits & 0x007fffffu);
  bits = static_cast<uint32_t>(mant) | 0x3f000000u;  // m in [0.5, 1)
  float m;
  std::memcpy(&m, &bits, 4);
  // m < sqrt(1/2) (0x3f3504f3 as a float) exactly when the mantissa bits are below 0x3504f3. Shifts and
  // arithmetic, no compare or select: without AVX-512's mask registers GCC leaves those loops unvectorized.
  const int32_t low = (mant - 0x3504f3) >> 31;  // -1 or 0
  const int32_t e = expo - 126 + low;
  m = m * (1.0f - static_cast<float>(low)) - 1.0f;  // 2m - 1 or m - 1, exactly
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  const float fe = static_cast<float>(e);
  y += -2.12194440e-4f * fe;
  y += -0.5f * z;
  return m + y + 0.693359375f * fe;
}

// Rows [lo, hi) of `n` for member t of a team of nt threads.
inline void band(int64_t n, int t, int nt, int64_t* lo, int64_t* hi) {
  *lo = n * t / nt;
  *hi = n * (t + 1) / nt;
}

// The helpers below stay out of line: GCC keeps __restrict only on parameters, and without it the loops that
// write one ring row from another run scalar (seen: 4x slower).

// The widest vector registers the target has: wider vector types are passed through memory (3x slower on AVX2).
#if defined(__AVX512F__)
constexpr int VEC_BYTES = 64;
#elif defined(__AVX__)
constexpr int VEC_BYTES = 32;
#else
constexpr int VEC_BYTES = 16;
#endif

// out[x] = op over rows[0][x], rows[1][x], ... rows[m - 1][x] in that order, x < n: one vector register at a
// time, holding the partial result while the m rows are folded into it, so out is written once (the rows may be
// shifted views of one row).
template <typename T, typename Op>
__attribute__((noinline)) void combine(const T* const* rows, int m, T* __restrict out, int64_t n, Op op) {
  typedef T vec __attribute__((vector_size(VEC_BYTES)));
  constexpr int64_t lanes = VEC_BYTES / sizeof(T);
  int64_t x0 = 0;
  for (; x0 + lanes <= n; x0 += lanes) {
    vec acc, v;
    std::memcpy(&acc, rows[0] + x0, VEC_BYTES);
    for (int k = 1; k < m; ++k) {
      std::memcpy(&v, rows[k] + x0, VEC_BYTES);
      acc = op(acc, v);
    }
    std::memcpy(out + x0, &acc, VEC_BYTES);
  }
  for (int64_t x = x0; x < n; ++x) {
    T v = rows[0][x];
    for (int k = 1; k < m; ++k) v = op(v, rows[k][x]);
    out[x] = v;
  }
}

// out[x] = op over in[x .. x + k - 1], x < n: a k-wide window at stride 1, its terms taken in order.
template <typename T, typename Op>
void window(const T* in, T* out, int64_t n, int k, Op op) {
  const T* rows[64];
  for (int j = 0; j < k; ++j) rows[j] = in + j;
  combine(rows, k, out, n, op);
}

const auto plus = [](auto u, auto v) { return u + v; };
const auto either = [](auto u, auto v) { return decltype(u)(u | v); };

// acc[x] (+)= ((hi[x] - lo[x]) / 2)^2, x < n: a squared central difference (set for the first channel).
__attribute__((noinline)) void add_square_diff(const float* __restrict hi, const float* __restrict lo,
                                               float* __restrict acc, int64_t n, bool first) {
  for (int64_t x = 0; x < n; ++x) {
    const float d = (hi[x] - lo[x]) * 0.5f;
    acc[x] = first ? d * d : acc[x] + d * d;
  }
}

// Sums vectorize as float lanes within blocks of BLOCK elements (64 terms a lane at 16 lanes); the block totals
// are added in double, so the error stays near PyTorch's float32 cascade sums (~1e-6 relative).
constexpr int64_t BLOCK = 1024;

// Sum of log(x + eps) over x[0 .. n).
__attribute__((noinline)) double sum_log(const float* __restrict x, int64_t n, float eps) {
  // Logs first, then their sum: as one loop it vectorizes only with AVX-512 (the simd reduction's lane array).
  float logs[BLOCK];
  double total = 0.0;
  for (int64_t k0 = 0; k0 < n; k0 += BLOCK) {
    const int64_t m = k0 + BLOCK < n ? BLOCK : n - k0;
    for (int64_t k = 0; k < m; ++k) logs[k] = log_positive(x[k0 + k] + eps);
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t k = 0; k < m; ++k) s += logs[k];
    total += s;
  }
  return total;
}

// Sum of log(x + eps) over the x[k] whose patch holds no clipped pixel (clip[k] == 0), k < n; their count is
// added to *kept. x is finite here (clipped patches are set to infinity after this).
__attribute__((noinline)) double sum_log_kept(const float* __restrict x, const uint8_t* __restrict clip, int64_t n,
                                              float eps, int64_t* kept) {
  float logs[BLOCK];
  double total = 0.0;
  for (int64_t k0 = 0; k0 < n; k0 += BLOCK) {
    const int64_t m = k0 + BLOCK < n ? BLOCK : n - k0;
    for (int64_t k = 0; k < m; ++k) logs[k] = log_positive(x[k0 + k] + eps) * static_cast<float>(1 - clip[k0 + k]);
    float s = 0.0f;
    int c = 0;
#pragma omp simd reduction(+ : s, c)
    for (int64_t k = 0; k < m; ++k) {
      s += logs[k];
      c += 1 - clip[k0 + k];
    }
    total += s;
    *kept += c;
  }
  return total;
}

// flag[x] = pixel x of an 8-bit RGB row is clipped: 0 in all three channels, or 255 in all three.
__attribute__((noinline)) void clipped_pixels(const uint8_t* __restrict src, uint8_t* __restrict flag, int64_t w) {
  for (int64_t x = 0; x < w; ++x) {
    const uint8_t r = src[3 * x], g = src[3 * x + 1], b = src[3 * x + 2];
    flag[x] = ((r | g | b) == 0) | ((r & g & b) == 255);
  }
}

// Count and sum of the x[k] <= t, k in [k0, k1), added to *count and *sum.
__attribute__((noinline)) void count_sum_below(const float* __restrict x, int64_t k0, int64_t k1, float t,
                                               int64_t* count, double* sum) {
  for (int64_t b0 = k0; b0 < k1; b0 += BLOCK) {
    const int64_t b1 = b0 + BLOCK < k1 ? b0 + BLOCK : k1;
    float s = 0.0f;
    int c = 0;
#pragma omp simd reduction(+ : s, c)
    for (int64_t k = b0; k < b1; ++k) {
      const bool sel = x[k] <= t;
      s += sel ? x[k] : 0.0f;
      c += sel ? 1 : 0;
    }
    *sum += s;
    *count += c;
  }
}

// Pass 1 for xi rows [i0, i1): luma (or the 3 channels) of rows [i0, i1 + p - 1) into a ring of 3 rows, row sums
// a (p - 2 horizontal differences) and b (p vertical differences), and xi as slsp.trsor.gradient_energy sums
// them: s = a + b shares one window of p - 2 rows, xi[i] = s[i] + ... + s[i + p - 3] + a[i + p - 2] + a[i + p - 1].
// Returns the sum of log(xi + eps) over the band. With `skip` (TrsorConfig.skip_clipped), a ring of p rows holds
// whether each pixel's p-wide row window meets a clipped pixel; the patches that do are left out of the sum (the
// others counted in *kept) and set to infinity, so no threshold selects them.
double energy_band(const uint8_t* img, int64_t w, int p, int nch, float eps, int64_t i0, int64_t i1, float* xi,
                   bool skip, int64_t* kept) {
  const int64_t wp = w - p + 1;
  std::vector<float> y(3 * nch * w), dd(w), a(p * wp), b(wp), sums((p - 2) * wp);
  std::vector<uint8_t> flag(skip ? w : 0), near(skip ? p * wp : 0), clip(skip ? wp : 0);
  double log_sum = 0.0;
  for (int64_t r = i0; r < i1 + p - 1; ++r) {
    float* __restrict yr = &y[(r % 3) * nch * w];
    const uint8_t* __restrict src = img + r * w * 3;
    if (nch == 1) {
      for (int64_t x = 0; x < w; ++x) {
        yr[x] = static_cast<float>(src[3 * x]) * 0.299f + static_cast<float>(src[3 * x + 1]) * 0.587f +
                static_cast<float>(src[3 * x + 2]) * 0.114f;
      }
    } else {
      for (int ch = 0; ch < 3; ++ch) {
        for (int64_t x = 0; x < w; ++x) yr[ch * w + x] = static_cast<float>(src[3 * x + ch]);
      }
    }
    if (skip) {
      clipped_pixels(src, flag.data(), w);
      window(flag.data(), &near[(r % p) * wp], wp, p, either);
    }
    // a: sum over p - 2 consecutive squared horizontal differences (summed over channels).
    for (int ch = 0; ch < nch; ++ch) add_square_diff(yr + ch * w + 2, yr + ch * w, dd.data(), w - 2, ch == 0);
    window(dd.data(), &a[(r % p) * wp], wp, p - 2, plus);
    // b for difference row r - 2 (rows r - 2 and r): sum over p consecutive squared vertical differences.
    if (r >= i0 + 2) {
      const float* yo = &y[((r - 2) % 3) * nch * w];
      for (int ch = 0; ch < nch; ++ch) add_square_diff(yr + ch * w, yo + ch * w, dd.data(), w, ch == 0);
      window(dd.data(), b.data(), wp, p, plus);
      const float* ab[2] = {&a[((r - 2) % p) * wp], b.data()};
      combine(ab, 2, &sums[((r - 2) % (p - 2)) * wp], wp, plus);
    }
    // xi row i = r - p + 1: s rows i .. i + p - 3 and a rows i + p - 2, i + p - 1 are all in the rings now.
    const int64_t i = r - p + 1;
    if (i < i0) continue;
    float* out = xi + i * wp;
    const float* rows[64];
    for (int k = 0; k < p - 2; ++k) rows[k] = &sums[((i + k) % (p - 2)) * wp];
    rows[p - 2] = &a[((i + p - 2) % p) * wp];
    rows[p - 1] = &a[((i + p - 1) % p) * wp];
    combine(rows, p, out, wp, plus);
    if (!skip) {
      log_sum += sum_log(out, wp, eps);
      continue;
    }
    const uint8_t* near_rows[64];
    for (int k = 0; k < p; ++k) near_rows[k] = &near[((i + k) % p) * wp];
    combine(near_rows, p, clip.data(), wp, either);
    log_sum += sum_log_kept(out, clip.data(), wp, eps, kept);
    for (int64_t x = 0; x < wp; ++x) out[x] = clip[x] ? INFINITY : out[x];
  }
  return log_sum;
}

// mask[x] = xi[x] <= threshold, x < n.
__attribute__((noinline)) void below(const float* __restrict xi, uint8_t* __restrict mask, int64_t n, float threshold) {
  for (int64_t x = 0; x < n; ++x) mask[x] = xi[x] <= threshold;
}

__attribute__((noinline)) int64_t count(const uint8_t* __restrict in, int64_t n) {
  int s = 0;
  for (int64_t x = 0; x < n; ++x) s += in[x];
  return s;
}

// Pass 3 for Phi rows [y0, y1): mask rows dilated along the row into a ring of p byte rows, then OR-ed down the
// column into Phi (0 or 1, one byte a pixel), and each row's Phi pixels added to its candidate tiles' counts.
void phi_band(const float* xi, int64_t h, int64_t w, int p, int c, float threshold, int64_t y0, int64_t y1,
              uint8_t* phi, int64_t* counts) {
  const int64_t wp = w - p + 1, hp = h - p + 1, ny = h / c, nx = w / c;
  std::vector<uint8_t> pad(w + p - 1, 0), ring(p * w);
  auto dilate_row = [&](int64_t i) {  // ring slot i % p <- mask row i dilated along the row (zero-padded)
    below(xi + i * wp, &pad[p - 1], wp, threshold);
    window(pad.data(), &ring[(i % p) * w], w, p, either);
  };
  for (int64_t i = y0 - p + 1 < 0 ? 0 : y0 - p + 1; i < y0 && i < hp; ++i) dilate_row(i);
  for (int64_t yy = y0; yy < y1; ++yy) {
    if (yy < hp) dilate_row(yy);
    const int64_t first = yy - p + 1 < 0 ? 0 : yy - p + 1, last = yy < hp - 1 ? yy : hp - 1;
    const uint8_t* rows[32];
    for (int64_t i = first; i <= last; ++i) rows[i - first] = &ring[(i % p) * w];
    uint8_t* row = phi + yy * w;
    combine(rows, static_cast<int>(last - first + 1), row, w, either);
    // Candidate tiles: (ny + 1) x (nx + 1); the last row and column are the tiles flush with the bottom and right.
    const bool grid = yy < ny * c, bottom = yy >= h - c;
    for (int64_t tx = 0; tx <= nx && (grid || bottom); ++tx) {
      const int64_t s = count(&row[tx < nx ? tx * c : w - c], c);
      if (grid) counts[(yy / c) * (nx + 1) + tx] += s;
      if (bottom) counts[ny * (nx + 1) + tx] += s;
    }
  }
}

// Output rows [lo, hi) of the f x f box level (wo = w / f columns): the f source rows summed column by column in
// uint16 (f <= 16: at most 256 * 255), then each pixel's f columns per channel, rounded half up as
// slsp.pyramid.box_level does. One read of the source rows, no full-size intermediate.
__attribute__((noinline)) void box_band(const uint8_t* __restrict img, int64_t w, int f, int64_t lo, int64_t hi,
                                        uint16_t* __restrict acc, uint8_t* __restrict out) {
  const int64_t wo = w / f, n = wo * f * 3;
  const uint32_t half = static_cast<uint32_t>(f * f / 2), shift = static_cast<uint32_t>(__builtin_ctz(f * f));
  for (int64_t oy = lo; oy < hi; ++oy) {
    std::memset(acc, 0, n * sizeof(uint16_t));
    for (int r = 0; r < f; ++r) {
      const uint8_t* __restrict src = img + (oy * f + r) * w * 3;
#pragma omp simd
      for (int64_t x = 0; x < n; ++x) acc[x] = static_cast<uint16_t>(acc[x] + src[x]);
    }
    uint8_t* __restrict row = out + oy * wo * 3;
    for (int64_t ox = 0; ox < wo; ++ox) {
      const uint16_t* a = acc + ox * f * 3;
      uint32_t s0 = 0, s1 = 0, s2 = 0;
      for (int k = 0; k < f; ++k) s0 += a[3 * k], s1 += a[3 * k + 1], s2 += a[3 * k + 2];
      row[3 * ox] = static_cast<uint8_t>((s0 + half) >> shift);
      row[3 * ox + 1] = static_cast<uint8_t>((s1 + half) >> shift);
      row[3 * ox + 2] = static_cast<uint8_t>((s2 + half) >> shift);
    }
  }
}

}  // namespace

extern "C" {

// img: (h, w, 3) uint8, h and w >= c >= 4 p. xi: ((h - p + 1) * (w - p + 1)) float32 scratch. phi: (h, w) uint8
// out. counts: ((h / c + 1) * (w / c + 1)) int64 out. null: {tau, truncated mean, log mean} of the Gamma null per
// unit variance (slsp.trsor.NullModel). The caller owns the large buffers so it can reuse them: freshly mapped
// pages cost a fault each (~1,500 a call at 1 MP, more than the kernel's own time). skip_clipped (last, so a
// caller of the older signature still links): TrsorConfig.skip_clipped; with every patch clipped, sigma^2 is 0.
// Returns the final noise variance sigma^2 in 8-bit units squared, or -1 on bad arguments.
double slsp_trsor(const uint8_t* img, int64_t h, int64_t w, int p, int nch, int iterations, const double* null,
                  float eps, int c, int threads, float* xi, uint8_t* phi, int64_t* counts, int skip_clipped) {
  // p <= 31 (TrsorConfig's bound) also bounds the row-pointer arrays above.
  if (p < 3 || p > 31 || p % 2 == 0 || (nch != 1 && nch != 3) || c < p || h < c || w < c || iterations < 0 || threads < 1)
    return -1.0;
  const int64_t hp = h - p + 1, wp = w - p + 1, n = hp * wp, ntiles = (h / c + 1) * (w / c + 1);
  const float tau = static_cast<float>(null[0] * nch), trunc = static_cast<float>(null[1] * nch);
  std::vector<double> logs(threads, 0.0), sums(iterations * threads, 0.0);
  std::vector<int64_t> selected(iterations * threads, 0), kept(threads, 0);
  std::vector<std::vector<int64_t>> partial(threads, std::vector<int64_t>(ntiles, 0));
  float result = 0.0f;
  // One team of plain threads for the whole call, in step at a barrier after each pass; each member derives the
  // same sigma^2 from the same per-member partial sums in the same order. (OpenMP's idle workers spin after a
  // parallel region and slowed the ONNX Runtime model run that follows in the same process 2-3x.)
  std::barrier sync(threads);
  auto member = [&](int t) {
    int64_t lo, hi;
    band(hp, t, threads, &lo, &hi);
    if (lo < hi) logs[t] = energy_band(img, w, p, nch, eps, lo, hi, xi, skip_clipped != 0, &kept[t]);
    sync.arrive_and_wait();
    double log_sum = 0.0;
    int64_t patches = 0;
    for (int k = 0; k < threads; ++k) log_sum += logs[k], patches += kept[k];
    patches = skip_clipped ? patches : n;
    // As PyTorch computes it in float32: start, thresholds, re-estimates.
    const double start = log_sum / static_cast<double>(patches > 0 ? patches : 1);
    float sigma2 = std::exp(static_cast<float>(start - null[2] - std::log(static_cast<double>(nch))));
    band(n, t, threads, &lo, &hi);
    for (int it = 0; it < iterations; ++it) {
      count_sum_below(xi, lo, hi, sigma2 * tau, &selected[it * threads + t], &sums[it * threads + t]);
      sync.arrive_and_wait();
      int64_t count = 0;
      double sum = 0.0;
      for (int k = 0; k < threads; ++k) count += selected[it * threads + k], sum += sums[it * threads + k];
      if (count > 0) sigma2 = static_cast<float>(sum / static_cast<double>(count)) / trunc;
    }
    band(h, t, threads, &lo, &hi);
    if (lo < hi) phi_band(xi, h, w, p, c, sigma2 * tau, lo, hi, phi, partial[t].data());
    if (t == 0) result = patches > 0 ? sigma2 : 0.0f;
  };
  std::vector<std::thread> team;
  for (int t = 1; t < threads; ++t) team.emplace_back(member, t);
  member(0);
  for (auto& th : team) th.join();
  for (int64_t k = 0; k < ntiles; ++k) {
    counts[k] = 0;
    for (const auto& part : partial) counts[k] += part[k];
  }
  return static_cast<double>(result);
}

// A pyramid level: out (h / f, w / f, 3) uint8, each pixel the mean of an f x f block of img (h, w, 3), rounded
// half up; f a power of two in [2, 16]. Returns 0, or -1 on bad arguments.
int slsp_box_level(const uint8_t* img, int64_t h, int64_t w, int f, int threads, uint8_t* out) {
  if (f < 2 || f > 16 || (f & (f - 1)) != 0 || h < f || w < f || threads < 1) return -1;
  const int64_t ho = h / f;
  const int nt = static_cast<int>(std::min<int64_t>(threads, ho));
  std::vector<std::vector<uint16_t>> acc(nt, std::vector<uint16_t>((w / f) * f * 3));
  auto member = [&](int t) {
    int64_t lo, hi;
    band(ho, t, nt, &lo, &hi);
    if (lo < hi) box_band(img, w, f, lo, hi, acc[t].data(), out);
  };
  std::vector<std::thread> team;
  for (int t = 1; t < nt; ++t) team.emplace_back(member, t);
  member(0);
  for (auto& th : team) th.join();
  return 0;
}

}  // extern "C"
