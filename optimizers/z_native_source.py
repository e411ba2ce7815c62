"""The C++ source of the native z kernel, compiled by optimizers/z_native.py."""

SOURCE = r"""
// theta += sum_s coef_s * z(seed_s) over many float32 or bfloat16 CPU tensors in one call: the stream of
// optimizers/zstream.py, written in C++ so that the compiler fuses hash, transform and update into one
// vectorised loop over cache-sized blocks. Every operation mirrors zstream.py's float32 arithmetic in the
// same order; only contraction into fused multiply-adds may move a value by an ulp. A bfloat16 weight is
// widened to float32, takes the float32 update and is rounded back once (to nearest, ties to even), as a torch
// add on a bfloat16 tensor rounds: no float32 copy of a tensor is ever made.
//
// Built on first use by optimizers/z_native.py (g++ -O3 -march=native) and called through ctypes. The source
// lives in this Python string so that it travels wherever the Python code goes (a Flower app bundle carries
// only .py, .toml, .md, .json and .yaml files).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

constexpr int64_t GAUSSIAN_BLOCK = 512;  // pairs per block: 4 KiB of weights, accumulators in L1
constexpr int64_t RADEMACHER_BLOCK = 64;  // words per block: 2048 elements
constexpr int64_t WORD_BITS = 32;
constexpr int64_t MIN_BLOCKS_PER_THREAD = 32;  // below this a second thread costs more than it saves

inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  return x ^ (x >> 16);
}

inline float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint32_t float_to_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

// A weight's storage: float32 as it is, bfloat16 widened to float32 and rounded back to nearest even.
inline float load(const float& w) { return w; }
inline void store(float& w, float v) { w = v; }
inline float load(const uint16_t& w) { return bits_to_float(static_cast<uint32_t>(w) << 16); }
inline void store(uint16_t& w, float v) {
  const uint32_t bits = float_to_bits(v);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) {  // NaN stays a (quiet) NaN
    w = static_cast<uint16_t>((bits >> 16) | 0x40u);
    return;
  }
  w = static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

// sqrt(-2 ln u1), u1 = k * 2**-24 for the odd 24-bit k of w1: see zstream._radius.
inline float radius(uint32_t w1) {
  const float k = static_cast<float>(static_cast<int32_t>(((w1 >> 8) & 0xFFFFFEu) | 1u));
  const uint32_t bits = float_to_bits(k);
  const bool high = (bits & 0x7FFFFFu) > 0x3504F3u;  // mantissa above sqrt(2): use f / 2 and e + 1
  const float f = bits_to_float((bits & 0x7FFFFFu) | (high ? 0x3F000000u : 0x3F800000u));
  const int32_t e = static_cast<int32_t>(bits >> 23) - 127 + (high ? 1 : 0);
  const float s = (f - 1.0f) / (f + 1.0f);
  const float s2 = s * s;
  const float series = 1.0f + s2 * (float(1.0 / 3.0) + s2 * (float(1.0 / 5.0) + s2 * (float(1.0 / 7.0)
                       + s2 * float(1.0 / 9.0))));
  const float minus_ln_u = static_cast<float>(24 - e) * float(0.6931471805599453) - 2.0f * s * series;
  return __builtin_sqrtf(2.0f * minus_ln_u);
}

// (cos, sin) of the angle (a / 2**24) * 2 pi, a the 24-bit value of w2: see zstream._quarter_turns.
inline void quarter_turns(uint32_t w2, float& cos_out, float& sin_out) {
  const uint32_t a = (w2 >> 8) & 0xFFFFFFu;
  const uint32_t rounded = (a + (1u << 21)) >> 22;
  const uint32_t q = rounded & 3u;
  const float t = static_cast<float>(static_cast<int32_t>(a) - static_cast<int32_t>(rounded << 22))
                  * float(1.5707963267948966 / 4194304.0);
  const float t2 = t * t;
  const float sn = t * (1.0f + t2 * (float(-1.0 / 6.0) + t2 * (float(1.0 / 120.0) + t2 * (float(-1.0 / 5040.0)
                   + t2 * float(1.0 / 362880.0)))));
  const float cs = 1.0f + t2 * (-0.5f + t2 * (float(1.0 / 24.0) + t2 * (float(-1.0 / 720.0)
                   + t2 * float(1.0 / 40320.0))));
  const float c = (q & 1u) ? sn : cs;
  const float s = (q & 1u) ? cs : sn;
  cos_out = (q == 1u || q == 2u) ? -c : c;
  sin_out = (q >= 2u) ? -s : s;
}

struct Key {  // one (seed, parameter name)'s three uint32 keys
  uint32_t a, b, c;
  explicit Key(const int32_t* k)
      : a(static_cast<uint32_t>(k[0])), b(static_cast<uint32_t>(k[1])), c(static_cast<uint32_t>(k[2])) {}
};

inline void gaussian_pair(uint32_t pair, const Key& key, float& x, float& y) {
  const uint32_t w1 = mix32(mix32(pair + key.a) ^ key.b);
  const uint32_t w2 = mix32(w1 ^ key.c);
  const float r = radius(w1);
  float c, s;
  quarter_turns(w2, c, s);
  x = r * c;
  y = r * s;
}

inline uint32_t rademacher_word(uint32_t word, const Key& key) {
  return mix32(mix32(word + key.a) ^ key.b);
}

inline float sign_of(uint32_t word, uint32_t bit) {
  return static_cast<float>(static_cast<int32_t>((word >> bit) & 1u) * 2 - 1);
}

struct Seeds {  // the seeds with a nonzero coefficient for one tensor
  int64_t count;
  const int32_t* const* keys;
  const float* coefs;
};

// Pairs [p0, p1) of w (numel elements). One or two seeds write the weights directly; more accumulate the
// block in L1 first, so the weights are read and written once whatever the number of seeds.
template <typename W>
void gaussian_block(W* w, int64_t numel, int64_t p0, int64_t p1, const Seeds& seeds) {
  const int64_t full = std::min(p1, numel / 2);  // pairs with both elements present
  const int64_t n = full - p0;
  const uint32_t first = static_cast<uint32_t>(p0);  // pair counters in uint32 lanes (counters are 31-bit)
  W* out = w + 2 * p0;
  if (seeds.count == 1) {
    const Key k(seeds.keys[0]);
    const float c = seeds.coefs[0];
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      float x, y;
      gaussian_pair(first + static_cast<uint32_t>(j), k, x, y);
      store(out[2 * j], load(out[2 * j]) + c * x);
      store(out[2 * j + 1], load(out[2 * j + 1]) + c * y);
    }
  } else if (seeds.count == 2) {
    const Key k0(seeds.keys[0]), k1(seeds.keys[1]);
    const float c0 = seeds.coefs[0], c1 = seeds.coefs[1];
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      float x0, y0, x1, y1;
      gaussian_pair(first + static_cast<uint32_t>(j), k0, x0, y0);
      gaussian_pair(first + static_cast<uint32_t>(j), k1, x1, y1);
      store(out[2 * j], load(out[2 * j]) + (c0 * x0 + c1 * x1));
      store(out[2 * j + 1], load(out[2 * j + 1]) + (c0 * y0 + c1 * y1));
    }
  } else {
    float ax[GAUSSIAN_BLOCK], ay[GAUSSIAN_BLOCK];
    std::fill(ax, ax + GAUSSIAN_BLOCK, 0.0f);
    std::fill(ay, ay + GAUSSIAN_BLOCK, 0.0f);
    for (int64_t s = 0; s < seeds.count; ++s) {
      const Key k(seeds.keys[s]);
      const float c = seeds.coefs[s];
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        float x, y;
        gaussian_pair(first + static_cast<uint32_t>(j), k, x, y);
        ax[j] += c * x;
        ay[j] += c * y;
      }
    }
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      store(out[2 * j], load(out[2 * j]) + ax[j]);
      store(out[2 * j + 1], load(out[2 * j + 1]) + ay[j]);
    }
  }
  if (full < p1) {  // odd numel: the last pair has only its first element
    float update = 0.0f;
    for (int64_t s = 0; s < seeds.count; ++s) {
      float x, y;
      gaussian_pair(static_cast<uint32_t>(full), Key(seeds.keys[s]), x, y);
      update += seeds.coefs[s] * x;
    }
    store(w[numel - 1], load(w[numel - 1]) + update);
  }
}

// Words [q0, q1) of w: element 32 q + b gets bit b of word q as -1 or +1.
template <typename W>
void rademacher_block(W* w, int64_t numel, int64_t q0, int64_t q1, const Seeds& seeds) {
  float acc[RADEMACHER_BLOCK * WORD_BITS];
  uint32_t words[RADEMACHER_BLOCK];
  const int64_t base = q0 * WORD_BITS;
  const int64_t n = std::min(numel, q1 * WORD_BITS) - base;
  for (int64_t s = 0; s < seeds.count; ++s) {
    const float c = seeds.coefs[s];
    const Key k(seeds.keys[s]);
#pragma omp simd
    for (int64_t q = q0; q < q1; ++q) words[q - q0] = rademacher_word(static_cast<uint32_t>(q), k);
    for (int64_t q = 0; q < q1 - q0; ++q) {
      const int64_t bits = std::min<int64_t>(WORD_BITS, n - q * WORD_BITS);
      float* a = acc + q * WORD_BITS;
      const uint32_t word = words[q];
      if (s == 0) {
#pragma omp simd
        for (int64_t b = 0; b < bits; ++b) a[b] = c * sign_of(word, static_cast<uint32_t>(b));
      } else {
#pragma omp simd
        for (int64_t b = 0; b < bits; ++b) a[b] += c * sign_of(word, static_cast<uint32_t>(b));
      }
    }
  }
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) store(w[base + i], load(w[base + i]) + acc[i]);
}

constexpr int FLOAT32 = 0, BFLOAT16 = 1;  // a tensor's storage type

struct Tensor {
  void* data;
  int dtype;
  int64_t numel;
  int64_t blocks;
  Seeds seeds;
};

// Blocks [first, last) of the whole table, counted tensor after tensor.
void run(int kind, const std::vector<Tensor>& tensors, int64_t first, int64_t last) {
  const int64_t block = kind == 0 ? GAUSSIAN_BLOCK : RADEMACHER_BLOCK;
  int64_t offset = 0;
  for (const Tensor& t : tensors) {
    const int64_t lo = std::max(first, offset) - offset, hi = std::min(last, offset + t.blocks) - offset;
    offset += t.blocks;
    if (lo >= hi || t.seeds.count == 0) continue;
    const int64_t units = kind == 0 ? (t.numel + 1) / 2 : (t.numel + WORD_BITS - 1) / WORD_BITS;
    for (int64_t b = lo; b < hi; ++b) {
      const int64_t u0 = b * block, u1 = std::min(units, u0 + block);
      if (t.dtype == BFLOAT16) {
        uint16_t* w = static_cast<uint16_t*>(t.data);
        if (kind == 0) gaussian_block(w, t.numel, u0, u1, t.seeds);
        else rademacher_block(w, t.numel, u0, u1, t.seeds);
      } else {
        float* w = static_cast<float*>(t.data);
        if (kind == 0) gaussian_block(w, t.numel, u0, u1, t.seeds);
        else rademacher_block(w, t.numel, u0, u1, t.seeds);
      }
    }
  }
}

// Block boundaries splitting the table into `threads` contiguous ranges of about equal work (blocks x seeds).
std::vector<int64_t> split(const std::vector<Tensor>& tensors, int64_t threads) {
  int64_t total = 0, blocks = 0;
  for (const Tensor& t : tensors) total += t.blocks * t.seeds.count, blocks += t.blocks;
  threads = std::max<int64_t>(1, std::min(threads, total / MIN_BLOCKS_PER_THREAD));
  std::vector<int64_t> bounds{0};
  int64_t cost = 0, offset = 0;
  for (const Tensor& t : tensors) {
    const int64_t next = cost + t.blocks * t.seeds.count;
    int64_t k = static_cast<int64_t>(bounds.size());
    for (; t.seeds.count > 0 && k < threads && next * threads >= total * k; ++k) {
      const int64_t need = (total * k + threads - 1) / threads - cost;  // work still to give range k - 1
      bounds.push_back(offset + (need + t.seeds.count - 1) / t.seeds.count);
    }
    cost = next;
    offset += t.blocks;
  }
  bounds.push_back(blocks);
  return bounds;
}

// Blocks per partial sum of z_dot: fixed, so the order of its sum is the same for any thread count.
constexpr int64_t DOT_GROUP = 64;

// sum_i w[i] * z_i over pairs [p0, p1), products and sum in double.
double gaussian_dot(const float* w, int64_t numel, int64_t p0, int64_t p1, const Key& k) {
  const int64_t full = std::min(p1, numel / 2);
  const uint32_t first = static_cast<uint32_t>(p0);
  const float* in = w + 2 * p0;
  double acc = 0.0;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < full - p0; ++j) {
    float x, y;
    gaussian_pair(first + static_cast<uint32_t>(j), k, x, y);
    acc += static_cast<double>(in[2 * j]) * x + static_cast<double>(in[2 * j + 1]) * y;
  }
  if (full < p1) {
    float x, y;
    gaussian_pair(static_cast<uint32_t>(full), k, x, y);
    acc += static_cast<double>(w[numel - 1]) * x;
  }
  return acc;
}

// sum_i w[i] * z_i over words [q0, q1).
double rademacher_dot(const float* w, int64_t numel, int64_t q0, int64_t q1, const Key& k) {
  double acc = 0.0;
  for (int64_t q = q0; q < q1; ++q) {
    const uint32_t word = rademacher_word(static_cast<uint32_t>(q), k);
    const int64_t base = q * WORD_BITS, bits = std::min<int64_t>(WORD_BITS, numel - base);
#pragma omp simd reduction(+ : acc)
    for (int64_t b = 0; b < bits; ++b)
      acc += static_cast<double>(w[base + b]) * sign_of(word, static_cast<uint32_t>(b));
  }
  return acc;
}

// Groups [g0, g1) of DOT_GROUP blocks: partial[g][s] = the group's sum for seed s (each block read once for all
// seeds while it is in cache).
void dot_groups(int kind, const float* w, int64_t numel, const std::vector<Key>& keys, int64_t g0, int64_t g1,
                double* partial) {
  const int64_t block = kind == 0 ? GAUSSIAN_BLOCK : RADEMACHER_BLOCK;
  const int64_t units = kind == 0 ? (numel + 1) / 2 : (numel + WORD_BITS - 1) / WORD_BITS;
  const int64_t blocks = (units + block - 1) / block, seeds = static_cast<int64_t>(keys.size());
  for (int64_t g = g0; g < g1; ++g) {
    double* out = partial + g * seeds;
    std::fill(out, out + seeds, 0.0);
    for (int64_t b = g * DOT_GROUP; b < std::min(blocks, (g + 1) * DOT_GROUP); ++b) {
      const int64_t u0 = b * block, u1 = std::min(units, u0 + block);
      for (int64_t s = 0; s < seeds; ++s)
        out[s] += kind == 0 ? gaussian_dot(w, numel, u0, u1, keys[s]) : rademacher_dot(w, numel, u0, u1, keys[s]);
    }
  }
}

// Only rows `rows` of a row-major [*, width] tensor: w[i] += coef * z(i) for the elements i of those rows, by
// the same arithmetic as z_apply with one seed (a loss that reads only these rows sees the same weights).
template <typename W>
void rows_of(int kind, W* w, int64_t width, const int64_t* rows, int64_t count, const int32_t* key, float coef) {
  const Key k(key);
  for (int64_t r = 0; r < count; ++r) {
    const int64_t i0 = rows[r] * width, i1 = i0 + width;
    if (kind == 0) {
      for (int64_t p = i0 / 2; 2 * p < i1; ++p) {
        float x, y;
        gaussian_pair(static_cast<uint32_t>(p), k, x, y);
        if (2 * p >= i0) store(w[2 * p], load(w[2 * p]) + coef * x);
        if (2 * p + 1 < i1) store(w[2 * p + 1], load(w[2 * p + 1]) + coef * y);
      }
    } else {
      for (int64_t i = i0; i < i1; ++i) {
        const uint32_t word = rademacher_word(static_cast<uint32_t>(i / WORD_BITS), k);
        store(w[i], load(w[i]) + coef * sign_of(word, static_cast<uint32_t>(i % WORD_BITS)));
      }
    }
  }
}

}  // namespace

extern "C" {

// out[s] = sum_i w[i] * z_i(seed s) for one float32 tensor: the groups of blocks split across threads, their
// partial sums added in group order, so the result does not depend on the thread count.
void z_dot(int kind, const float* w, int64_t numel, const int32_t* keys, int64_t seeds, double* out,
           int64_t threads) {
  std::vector<Key> k;
  for (int64_t s = 0; s < seeds; ++s) k.emplace_back(keys + 3 * s);
  const int64_t block = kind == 0 ? GAUSSIAN_BLOCK : RADEMACHER_BLOCK;
  const int64_t units = kind == 0 ? (numel + 1) / 2 : (numel + WORD_BITS - 1) / WORD_BITS;
  const int64_t groups = ((units + block - 1) / block + DOT_GROUP - 1) / DOT_GROUP;
  std::vector<double> partial(groups * seeds);
  threads = std::max<int64_t>(1, std::min(threads, groups));
  std::vector<std::thread> workers;
  for (int64_t t = 1; t < threads; ++t)
    workers.emplace_back(dot_groups, kind, w, numel, std::cref(k), groups * t / threads, groups * (t + 1) / threads,
                         partial.data());
  dot_groups(kind, w, numel, k, 0, groups / threads, partial.data());
  for (std::thread& worker : workers) worker.join();
  for (int64_t s = 0; s < seeds; ++s) {
    double sum = 0.0;
    for (int64_t g = 0; g < groups; ++g) sum += partial[g * seeds + s];
    out[s] = sum;
  }
}

// rows_of on a FLOAT32 or BFLOAT16 tensor.
void z_rows(int kind, int dtype, void* w, int64_t width, const int64_t* rows, int64_t count, const int32_t* key,
            float coef) {
  if (dtype == BFLOAT16) rows_of(kind, static_cast<uint16_t*>(w), width, rows, count, key, coef);
  else rows_of(kind, static_cast<float*>(w), width, rows, count, key, coef);
}

// kind 0 = gaussian, 1 = rademacher. dtypes: FLOAT32 or BFLOAT16 per tensor; keys: int32 [tensors][seeds][3];
// coefs: float32 [tensors][seeds] (a zero coefficient skips that seed on that tensor).
void z_apply(int kind, int64_t count, void** data, const int32_t* dtypes, const int64_t* numel, const int32_t* keys,
             const float* coefs, int64_t seeds, int64_t threads) {
  const int64_t unit = kind == 0 ? 2 : WORD_BITS;
  const int64_t block = kind == 0 ? GAUSSIAN_BLOCK : RADEMACHER_BLOCK;
  std::vector<const int32_t*> active_keys(count * seeds);
  std::vector<float> active_coefs(count * seeds);
  std::vector<Tensor> tensors(count);
  for (int64_t i = 0; i < count; ++i) {
    const int64_t first = i * seeds;
    int64_t active = 0;
    for (int64_t s = 0; s < seeds; ++s) {
      if (coefs[first + s] == 0.0f) continue;
      active_keys[first + active] = keys + 3 * (first + s);
      active_coefs[first + active++] = coefs[first + s];
    }
    const int64_t units = (numel[i] + unit - 1) / unit;
    tensors[i] = Tensor{data[i], dtypes[i], numel[i], (units + block - 1) / block,
                        Seeds{active, active_keys.data() + first, active_coefs.data() + first}};
  }
  const std::vector<int64_t> bounds = split(tensors, threads);
  std::vector<std::thread> workers;
  for (size_t k = 1; k + 1 < bounds.size(); ++k)
    workers.emplace_back(run, kind, std::cref(tensors), bounds[k], bounds[k + 1]);
  run(kind, tensors, bounds[0], bounds[1]);
  for (std::thread& worker : workers) worker.join();
}
}
"""
