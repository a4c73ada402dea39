/* The integer JPEG round trip of diffjpeg.jpeg.codec, fused into one pass per image, for the CPU.
 *
 * Same arithmetic as the tensor stages in integer mode (libjpeg-turbo's): 8-bit input samples,
 * fixed-point RGB -> YCbCr, edge replication, box downsampling with alternating bias, islow DCT,
 * round-half-away quantisation, dequantisation, islow inverse DCT with range limit, fancy (or
 * simple) upsampling, fixed-point YCbCr -> RGB. Every constant comes from Python (the islow pass
 * matrices of dct.py, the fixed-point colour matrices of color.py), so the two implementations
 * share their numbers; tests/test_native.py checks that they agree bit for bit.
 *
 * Integer bounds: |forward pass 2 sum| <= 2^16 * 4096 = 2^28; |inverse pass 2 sum| <= 61214 *
 * 34436 < 2^31 (dequantised coefficients are at most 1024 + 255/2). int32 suffices throughout.
 *
 * integer_round_trip_adjoint is the backward pass of the straight-through round trip: the transpose
 * of its linear part, stage by stage in reverse (codec._round_trip_adjoint), computed in double.
 * The forward pass also checks the input's values as it loads them (finite, in [low, high]) and returns
 * how many images fail, so that the caller needs no pass of its own for its value check.
 * Scratch memory is a torch tensor the caller allocates, so that torch's memory profiler counts it.
 * Images are shared among OpenMP threads (run); the 8x8 block loops have AVX2 versions, with plain C
 * loops for other processors (built and tested with -mno-avx2 in tests/test_native.py).
 */
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdint.h>
#include <string.h>

typedef struct {
    int32_t fdct[64];    /* forward pass: F[frequency][sample], 13 fraction bits */
    int32_t idct[64];    /* inverse pass: I[sample][frequency] */
    int32_t to_ycc[9];   /* rows Y, Cb, Cr over R, G, B, times 2^16 */
    int32_t to_rgb[6];   /* rows R, G, B over (Cb - 128, Cr - 128), times 2^16 */
} constants;

typedef struct block_matrices block_matrices;

typedef struct {
    const void *input;   /* (B, C, H, W) float32 or float64: images in [0, 1], or the output's gradient */
    void *output;        /* (B, C, H, W) in the same dtype: the images, or the input's gradient */
    const void *tables;  /* (B, 2, 64) integer-valued tables in the input's dtype, natural order (forward only) */
    long table_stride;   /* between images' tables, in elements (0: one pair for the batch) */
    const constants *k;
    const block_matrices *matrices; /* forward only */
    const double *adjoint; /* the islow round trip's adjoint per block: 8x8 column and 8x8 row matrices */
    uint8_t *scratch;    /* scratch_bytes(...) per thread, allocated by the caller */
    long scratch_size;
    long batch, channels, height, width;
    long stride[4];      /* the input's strides, in elements */
    long ostride[4];     /* the output's (the caller's layout: the input's, so no copy follows) */
    int fv, fh, is_double, fancy;
    double low, high;    /* the input values allowed (forward only): low <= v <= high, as the value check's */
} job;

static int clamp255(int v) { return v < 0 ? 0 : (v > 255 ? 255 : v); }
static long ceil_div(long a, long b) { return (a + b - 1) / b; }

/* The pass matrices in the layouts the block loops read (each inner loop one 8-lane vector), made
 * once per call from the constants. */
struct block_matrices {
    int32_t ft[64], f[64], i[64], it[64];   /* F^T, F, I, I^T */
    /* the same numbers as int16 pairs for AVX2's multiply-add of pairs (block_round_trip_avx2):
     * rows_x[p]: lanes (M[u][2p], M[u][2p+1]) for u = 0..7; columns_x[v][p]: (M[v][2p], M[v][2p+1]) */
    int16_t rows_f[4][16] __attribute__((aligned(32))), rows_i[4][16] __attribute__((aligned(32)));
    int16_t columns_f[8][4][2], columns_i[8][4][2];
};

static void prepare_matrices(block_matrices *bm, const constants *k) {
    for (int r = 0; r < 8; r++)
        for (int c = 0; c < 8; c++) {
            bm->f[r * 8 + c] = k->fdct[r * 8 + c], bm->ft[c * 8 + r] = k->fdct[r * 8 + c];
            bm->i[r * 8 + c] = k->idct[r * 8 + c], bm->it[c * 8 + r] = k->idct[r * 8 + c];
        }
    for (int q = 0; q < 4; q++)
        for (int u = 0; u < 8; u++)
            for (int e = 0; e < 2; e++) {
                bm->rows_f[q][2 * u + e] = (int16_t)k->fdct[u * 8 + 2 * q + e];
                bm->rows_i[q][2 * u + e] = (int16_t)k->idct[u * 8 + 2 * q + e];
                bm->columns_f[u][q][e] = (int16_t)k->fdct[u * 8 + 2 * q + e];
                bm->columns_i[u][q][e] = (int16_t)k->idct[u * 8 + 2 * q + e];
            }
}

/* One table's quantiser: round-half-away of s / (8 Q) (s: islow's output, 8 x the orthonormal
 * coefficient) is floor(n / d) with n = |s| + 4 Q, d = 8 Q, and the sign of s. n < 2^14, so the float
 * estimate n * (1 / d) is off by at most one and one correction each way makes it exact. */
typedef struct {
    int32_t table[64] __attribute__((aligned(32)));
    float reciprocal[64] __attribute__((aligned(32)));  /* 1 / (8 Q) */
} quantiser;

static void prepare_quantiser(quantiser *q, const void *tables, long at, int is_double) {
    for (int n = 0; n < 64; n++) {
        q->table[n] = is_double ? (int32_t)((const double *)tables)[at + n] : (int32_t)((const float *)tables)[at + n];
        q->reciprocal[n] = 1.0f / (8.0f * (float)q->table[n]);
    }
}

#ifndef __AVX2__
/* One 8x8 block of samples (stride apart, values 0..255) through DCT, quantisation, dequantisation
 * and inverse DCT, in place (the portable loop; block_round_trip_avx2 below where AVX2 exists). */
static void block_round_trip(int16_t *p, long stride, const block_matrices *k, const quantiser *qt) {
    int32_t a[64], c[64];
    for (int r = 0; r < 8; r++) {        /* pass 1 along rows, samples level-shifted by -128 */
        int32_t acc[8];
        for (int u = 0; u < 8; u++) acc[u] = 1 << 10;
        for (int i = 0; i < 8; i++) {
            int32_t s = p[r * stride + i] - 128;
            for (int u = 0; u < 8; u++) acc[u] += k->ft[i * 8 + u] * s;
        }
        for (int u = 0; u < 8; u++) a[r * 8 + u] = acc[u] >> 11;
    }
    for (int v = 0; v < 8; v++) {        /* pass 2 along columns, then quantise and dequantise */
        int32_t acc[8];
        for (int u = 0; u < 8; u++) acc[u] = 1 << 14;
        for (int i = 0; i < 8; i++)
            for (int u = 0; u < 8; u++) acc[u] += k->f[v * 8 + i] * a[i * 8 + u];
        for (int u = 0; u < 8; u++) {    /* quantise and dequantise (see quantiser) */
            int32_t s = acc[u] >> 15, t = qt->table[v * 8 + u];
            int32_t n = (s < 0 ? -s : s) + 4 * t, d = 8 * t;
            int32_t level = (int32_t)((float)n * qt->reciprocal[v * 8 + u]);
            level += (level + 1) * d <= n;
            level -= level * d > n;
            c[v * 8 + u] = (s < 0 ? -level : level) * t;
        }
    }
    for (int i = 0; i < 8; i++) {        /* inverse pass 1 along columns */
        int32_t acc[8];
        for (int u = 0; u < 8; u++) acc[u] = 1 << 10;
        for (int v = 0; v < 8; v++)
            for (int u = 0; u < 8; u++) acc[u] += k->i[i * 8 + v] * c[v * 8 + u];
        for (int u = 0; u < 8; u++) a[i * 8 + u] = acc[u] >> 11;
    }
    for (int r = 0; r < 8; r++) {        /* inverse pass 2 along rows, +128 and the range limit */
        int32_t acc[8];
        for (int i = 0; i < 8; i++) acc[i] = 1 << 17;
        for (int u = 0; u < 8; u++)
            for (int i = 0; i < 8; i++) acc[i] += k->it[u * 8 + i] * a[r * 8 + u];
        for (int i = 0; i < 8; i++) p[r * stride + i] = (int16_t)clamp255((acc[i] >> 18) + 128);
    }
}
#endif

#ifdef __AVX2__
#include <immintrin.h>

/* The same block round trip with AVX2: each 1-D pass as multiply-adds of int16 pairs into int32
 * (every pass input fits in int16: samples - 128, |pass 1| <= 4096, |dequantised| <= 1152; the inverse
 * pass 1 output usually does, and the block falls back to the int32 loop when it does not). */

/* Row pass: out[r][u] = sum_i M[u][i] x[r][i] for 8 rows of 8 int16 (x rows `stride` apart). */
static inline __m256i row_pass(const int16_t *x, long stride, int r, const int16_t (*m)[16]) {
    __m256i acc = _mm256_madd_epi16(_mm256_set1_epi32(*(const int32_t *)(x + r * stride)), _mm256_load_si256((const __m256i *)m[0]));
    for (int q = 1; q < 4; q++)
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_set1_epi32(*(const int32_t *)(x + r * stride + 2 * q)),
                                                      _mm256_load_si256((const __m256i *)m[q])));
    return acc;
}

/* Rows 2q and 2q + 1 (int16, in the low and high half of `pair`) interleaved for a column pass. */
static inline __m256i interleave(__m256i pair) {
    __m128i lo = _mm256_castsi256_si128(pair), hi = _mm256_extracti128_si256(pair, 1);
    return _mm256_set_m128i(_mm_unpackhi_epi16(lo, hi), _mm_unpacklo_epi16(lo, hi));
}

/* Column pass for output row v: sum_i M[v][i] x[i][u] from the four interleaved row pairs. */
static inline __m256i column_pass(const __m256i *pairs, const int16_t (*m)[2]) {
    __m256i acc = _mm256_madd_epi16(pairs[0], _mm256_set1_epi32(*(const int32_t *)m[0]));
    for (int q = 1; q < 4; q++)
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs[q], _mm256_set1_epi32(*(const int32_t *)m[q])));
    return acc;
}

/* Two rows of int32 -> one vector of their int16 values (row a low, row b high). */
static inline __m256i pack_rows(__m256i a, __m256i b) {
    return _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
}

static void block_round_trip_avx2(int16_t *p, long stride, const block_matrices *k, const quantiser *qt) {
    int16_t shifted[64] __attribute__((aligned(32)));
    __m256i rows[8], pairs[4];
    const __m256i centre = _mm256_set1_epi16(128);
    for (int r = 0; r < 8; r += 2)       /* level shift */
        _mm256_store_si256((__m256i *)(shifted + 8 * r),
                           _mm256_sub_epi16(_mm256_set_m128i(_mm_loadu_si128((const __m128i *)(p + (r + 1) * stride)),
                                                             _mm_loadu_si128((const __m128i *)(p + r * stride))), centre));
    for (int r = 0; r < 8; r++)          /* pass 1 along rows */
        rows[r] = _mm256_srai_epi32(_mm256_add_epi32(row_pass(shifted, 8, r, k->rows_f), _mm256_set1_epi32(1 << 10)), 11);
    for (int q = 0; q < 4; q++) pairs[q] = interleave(pack_rows(rows[2 * q], rows[2 * q + 1]));
    for (int v = 0; v < 8; v++) {        /* pass 2 along columns, quantisation and dequantisation */
        __m256i s = _mm256_srai_epi32(_mm256_add_epi32(column_pass(pairs, k->columns_f[v]), _mm256_set1_epi32(1 << 14)), 15);
        __m256i t = _mm256_load_si256((const __m256i *)(qt->table + 8 * v));
        __m256i n = _mm256_add_epi32(_mm256_abs_epi32(s), _mm256_slli_epi32(t, 2)), d = _mm256_slli_epi32(t, 3);
        /* floor(n / d) from the float estimate, corrected (see quantiser) */
        __m256i l = _mm256_cvttps_epi32(_mm256_mul_ps(_mm256_cvtepi32_ps(n), _mm256_load_ps(qt->reciprocal + 8 * v)));
        __m256i one = _mm256_set1_epi32(1);
        l = _mm256_sub_epi32(l, _mm256_cmpgt_epi32(_mm256_add_epi32(n, one), _mm256_mullo_epi32(_mm256_add_epi32(l, one), d)));
        l = _mm256_add_epi32(l, _mm256_cmpgt_epi32(_mm256_mullo_epi32(l, d), n));
        rows[v] = _mm256_mullo_epi32(_mm256_sign_epi32(l, s), t);
    }
    for (int q = 0; q < 4; q++) pairs[q] = interleave(pack_rows(rows[2 * q], rows[2 * q + 1]));
    __m256i big = _mm256_setzero_si256();
    for (int i = 0; i < 8; i++) {        /* inverse pass 1 along columns */
        rows[i] = _mm256_srai_epi32(_mm256_add_epi32(column_pass(pairs, k->columns_i[i]), _mm256_set1_epi32(1 << 10)), 11);
        big = _mm256_or_si256(big, _mm256_cmpgt_epi32(_mm256_abs_epi32(rows[i]), _mm256_set1_epi32(32767)));
    }
    if (!_mm256_testz_si256(big, big)) { /* beyond int16: the last pass in int32 */
        int32_t a[64];
        for (int r = 0; r < 8; r++) _mm256_storeu_si256((__m256i *)(a + 8 * r), rows[r]);
        for (int r = 0; r < 8; r++)
            for (int i = 0; i < 8; i++) {
                int32_t acc = 1 << 17;
                for (int u = 0; u < 8; u++) acc += k->it[u * 8 + i] * a[r * 8 + u];
                p[r * stride + i] = (int16_t)clamp255((acc >> 18) + 128);
            }
        return;
    }
    for (int r = 0; r < 8; r += 2) _mm256_store_si256((__m256i *)(shifted + 8 * r), pack_rows(rows[r], rows[r + 1]));
    const __m256i bias = _mm256_set1_epi32(1 << 17), zero = _mm256_setzero_si256(), top = _mm256_set1_epi32(255);
    for (int r = 0; r < 8; r += 2) {     /* inverse pass 2 along rows, +128 and the range limit */
        __m256i out[2];
        for (int e = 0; e < 2; e++) {
            __m256i v = _mm256_add_epi32(_mm256_srai_epi32(_mm256_add_epi32(row_pass(shifted, 8, r + e, k->rows_i), bias), 18),
                                         _mm256_set1_epi32(128));
            out[e] = _mm256_min_epi32(_mm256_max_epi32(v, zero), top);
        }
        __m256i both = pack_rows(out[0], out[1]);
        _mm_storeu_si128((__m128i *)(p + r * stride), _mm256_castsi256_si128(both));
        _mm_storeu_si128((__m128i *)(p + (r + 1) * stride), _mm256_extracti128_si256(both, 1));
    }
}
#define BLOCK_ROUND_TRIP block_round_trip_avx2
#else
#define BLOCK_ROUND_TRIP block_round_trip
#endif

static void plane_round_trip(int16_t *plane, long rows, long cols, const block_matrices *k, const quantiser *q) {
    for (long r = 0; r < rows; r += 8)
        for (long c = 0; c < cols; c += 8) BLOCK_ROUND_TRIP(plane + r * cols + c, cols, k, q);
}

/* Input to 8-bit samples: clamp(floor(255 x + 1/2), 0, 255), the multiply-add fused as torch's is.
 * The clamps are comparisons that map to max / min instructions (NaN -> 0; the loads check the
 * values as they read them, see FLAGS). The input may have any strides (channels-last batches need no copy). */
static inline float sample_float(float v) {
    v = floorf(fmaf(255.0f, v, 0.5f));
    v = v > 0.0f ? v : 0.0f;
    return v < 255.0f ? v : 255.0f;
}
static inline double sample_double(double v) {
    v = floor(fma(255.0, v, 0.5));
    v = v > 0.0 ? v : 0.0;
    return v < 255.0 ? v : 255.0;
}
/* The loads' flags: a NaN (passed on by store), a value outside [low, high] or not finite (the value
 * check, read in the same pass as the samples: NaN fails both comparisons). */
enum { HAS_NAN = 1, OUT_OF_RANGE = 2 };
#define FLAGS(v, low, high) (((v) != (v)) | (!((v) >= (low) && (v) <= (high)) << 1))

/* One row to 8-bit samples; returns its flags. */
static int load_row_float(const float *restrict x, long step, long w, float low, float high, uint8_t *restrict d) {
    int flags = 0;
    if (step == 1)  /* the same loop, vectorised */
        for (long i = 0; i < w; i++) flags |= FLAGS(x[i], low, high), d[i] = (uint8_t)(int32_t)sample_float(x[i]);
    else
        for (long i = 0; i < w; i++)
            flags |= FLAGS(x[i * step], low, high), d[i] = (uint8_t)(int32_t)sample_float(x[i * step]);
    return flags;
}
static int load_row_double(const double *restrict x, long step, long w, double low, double high,
                           uint8_t *restrict d) {
    int flags = 0;
    if (step == 1)
        for (long i = 0; i < w; i++) flags |= FLAGS(x[i], low, high), d[i] = (uint8_t)(int32_t)sample_double(x[i]);
    else
        for (long i = 0; i < w; i++)
            flags |= FLAGS(x[i * step], low, high), d[i] = (uint8_t)(int32_t)sample_double(x[i * step]);
    return flags;
}

/* One row of interleaved RGB pixels (a channels-last batch) to three 8-bit rows in one pass. */
static int load_pixels_float(const float *restrict x, long w, float low, float high, uint8_t *restrict r,
                             uint8_t *restrict g, uint8_t *restrict bl) {
    int flags = 0;
    for (long i = 0; i < w; i++) {
        flags |= FLAGS(x[3 * i], low, high) | FLAGS(x[3 * i + 1], low, high) | FLAGS(x[3 * i + 2], low, high);
        r[i] = (uint8_t)(int32_t)sample_float(x[3 * i]), g[i] = (uint8_t)(int32_t)sample_float(x[3 * i + 1]);
        bl[i] = (uint8_t)(int32_t)sample_float(x[3 * i + 2]);
    }
    return flags;
}

/* Whether a (B, 3, H, W) layout is channels-last: each row's pixels three interleaved samples. */
static int interleaved(long channels, const long *stride) { return channels == 3 && stride[1] == 1 && stride[3] == 3; }

/* Image b to 8-bit planes; returns its flags (the tensor code passes NaN on; so does store, for the
 * whole image, rather than return a JPEG of something the input is not). */
static int load(const job *j, long b, uint8_t *rgb) {
    int flags = 0;
    long n = j->height * j->width;
    const float low = (float)j->low, high = (float)j->high;  /* exact: the caller gives float32 bounds */
    if (!j->is_double && interleaved(j->channels, j->stride)) {
        for (long y = 0; y < j->height; y++) {
            uint8_t *d = rgb + y * j->width;
            flags |= load_pixels_float((const float *)j->input + b * j->stride[0] + y * j->stride[2], j->width, low,
                                       high, d, d + n, d + 2 * n);
        }
        return flags;
    }
    for (long c = 0; c < j->channels; c++)
        for (long y = 0; y < j->height; y++) {
            long offset = b * j->stride[0] + c * j->stride[1] + y * j->stride[2];
            uint8_t *d = rgb + (c * j->height + y) * j->width;
            if (j->is_double)
                flags |= load_row_double((const double *)j->input + offset, j->stride[3], j->width, j->low, j->high, d);
            else flags |= load_row_float((const float *)j->input + offset, j->stride[3], j->width, low, high, d);
        }
    return flags;
}

static void store(const job *j, long b, const uint8_t *pixels, int nan) {
    long w = j->width, step = j->ostride[3], n = j->height * w;
    if (!j->is_double && interleaved(j->channels, j->ostride)) {
        for (long y = 0; y < j->height; y++) {
            const uint8_t *r = pixels + y * w, *g = r + n, *bl = r + 2 * n;
            float *restrict o = (float *)j->output + b * j->ostride[0] + y * j->ostride[2];
            if (nan)
                for (long x = 0; x < 3 * w; x++) o[x] = NAN;
            else
                for (long x = 0; x < w; x++)
                    o[3 * x] = r[x] / 255.0f, o[3 * x + 1] = g[x] / 255.0f, o[3 * x + 2] = bl[x] / 255.0f;
        }
        return;
    }
    for (long c = 0; c < j->channels; c++)
        for (long y = 0; y < j->height; y++) {
            const uint8_t *p = pixels + (c * j->height + y) * w;
            long at = b * j->ostride[0] + c * j->ostride[1] + y * j->ostride[2];
            if (j->is_double) {
                double *o = (double *)j->output + at;
                for (long x = 0; x < w; x++) o[x * step] = nan ? NAN : p[x] / 255.0;
            } else {
                float *o = (float *)j->output + at;
                if (step == 1)  /* the same loop, vectorised */
                    for (long x = 0; x < w; x++) o[x] = nan ? NAN : p[x] / 255.0f;
                else
                    for (long x = 0; x < w; x++) o[x * step] = nan ? NAN : p[x] / 255.0f;
            }
        }
}

/* RGB planes -> Y, Cb, Cr planes (in place, H x W each), libjpeg's fixed point. */
static void to_ycbcr(uint8_t *p, long n, const int32_t *m) {
    uint8_t *r = p, *g = p + n, *bl = p + 2 * n;
    for (long i = 0; i < n; i++) {
        int32_t R = r[i], G = g[i], B = bl[i];
        int32_t y = (m[0] * R + m[1] * G + m[2] * B + 32768) >> 16;
        int32_t cb = (m[3] * R + m[4] * G + m[5] * B + (128 << 16) + 32767) >> 16;
        int32_t cr = (m[6] * R + m[7] * G + m[8] * B + (128 << 16) + 32767) >> 16;
        r[i] = (uint8_t)y, g[i] = (uint8_t)cb, bl[i] = (uint8_t)cr;
    }
}

/* A plane of h x w samples onto its rows x cols block grid, edges replicated. */
static void to_grid(const uint8_t *restrict src, long h, long w, int16_t *restrict dst, long rows, long cols) {
    for (long r = 0; r < rows; r++) {
        const uint8_t *s = src + (r < h ? r : h - 1) * w;
        int16_t *d = dst + r * cols;
        for (long c = 0; c < w; c++) d[c] = s[c];
        for (long c = w; c < cols; c++) d[c] = s[w - 1];
    }
}

/* Full-resolution chroma -> the fv x 2 box averages on the rows x cols chroma grid (subsampled chroma
 * is always halved horizontally: 4:2:2 and 4:2:0). libjpeg replicates the full-resolution edge to
 * whole boxes and the last box row down to the grid; the bias alternates along the row (1, 2 for 2x2
 * boxes; 0, 1 for 2x1). */
static void downsample(const uint8_t *restrict src, long h, long w, int fv, int16_t *restrict dst, long rows,
                       long cols) {
    long last = ceil_div(h, fv) - 1, whole = w / 2;  /* output columns whose box lies inside the image */
    int shift = fv == 2 ? 2 : 1, first = fv == 2 ? 1 : 0;
    for (long r = 0; r < rows; r++) {
        long rr = r < last ? r : last;
        const uint8_t *s0 = src + (fv * rr < h ? fv * rr : h - 1) * w;
        const uint8_t *s1 = fv == 2 ? src + (fv * rr + 1 < h ? fv * rr + 1 : h - 1) * w : s0;
        int16_t *d = dst + r * cols;
        if (fv == 2)
            for (long c = 0; c < whole; c++) d[c] = (int16_t)((s0[2 * c] + s0[2 * c + 1] + s1[2 * c] + s1[2 * c + 1] + 1 + (c & 1)) >> 2);
        else
            for (long c = 0; c < whole; c++) d[c] = (int16_t)((s0[2 * c] + s0[2 * c + 1] + (c & 1)) >> 1);
        for (long c = whole; c < cols; c++) {  /* boxes over the right edge: replicated samples */
            int32_t sum = first + (int32_t)(c & 1);
            for (int e = 0; e < 2; e++) {
                long x = 2 * c + e < w ? 2 * c + e : w - 1;
                sum += s0[x] + (fv == 2 ? s1[x] : 0);
            }
            d[c] = (int16_t)(sum >> shift);
        }
    }
}

/* One output row of a chroma plane (ph x pw on a grid of stride cols, halved horizontally and, with
 * fv = 2, vertically) upsampled to width w. */
static void upsample_row(const int16_t *restrict plane, long ph, long pw, long cols, int fv, int fancy, long y,
                         long w, int32_t *restrict colsum, uint8_t *restrict out) {
    long i = fv == 2 ? y / 2 : y;
    const int16_t *row = plane + i * cols;
    if (!fancy || pw <= 2) {             /* replication; libjpeg's fancy filter needs 3 samples */
        for (long x = 0; x < w; x++) out[x] = (uint8_t)row[x / 2];
        return;
    }
    int32_t *s = colsum + 1;             /* s[-1] and s[pw] hold the edge samples again (replication) */
    if (fv == 2) {                       /* vertical triangle: 3 x nearest row + the other neighbour */
        long n = y % 2 == 0 ? (i > 0 ? i - 1 : 0) : (i < ph - 1 ? i + 1 : ph - 1);
        const int16_t *other = plane + n * cols;
        for (long j = 0; j < pw; j++) s[j] = 3 * row[j] + other[j];
    } else {
        for (long j = 0; j < pw; j++) s[j] = row[j];
    }
    s[-1] = s[0], s[pw] = s[pw - 1];
    /* horizontal triangle: out[2 j] = (3 s[j] + s[j - 1] + bl) >> shift, out[2 j + 1] = (3 s[j] + s[j + 1] + br)
     * >> shift; w is 2 pw, or 2 pw - 1 (no last odd pixel) */
    int32_t bl = fv == 2 ? 8 : 1, br = fv == 2 ? 7 : 2, shift = fv == 2 ? 4 : 2;
    long j = 0;
#ifdef __AVX2__
    /* 8 pairs at a time (chroma rows are short: 16 samples at CIFAR size, too few for the vectoriser) */
    const __m256i left = _mm256_set1_epi32(bl), right = _mm256_set1_epi32(br);
    const __m128i count = _mm_cvtsi32_si128(shift);
    for (; j + 8 <= w / 2; j += 8) {
        __m256i c = _mm256_loadu_si256((const __m256i *)(s + j)), c3 = _mm256_add_epi32(_mm256_add_epi32(c, c), c);
        __m256i before = _mm256_loadu_si256((const __m256i *)(s + j - 1));
        __m256i after = _mm256_loadu_si256((const __m256i *)(s + j + 1));
        __m256i even = _mm256_sra_epi32(_mm256_add_epi32(_mm256_add_epi32(c3, before), left), count);
        __m256i odd = _mm256_sra_epi32(_mm256_add_epi32(_mm256_add_epi32(c3, after), right), count);
        /* within each 128-bit lane: (e0 o0 e1 o1) (e2 o2 e3 o3) -> 16-bit -> 8-bit, in pixel order */
        __m256i pairs = _mm256_packs_epi32(_mm256_unpacklo_epi32(even, odd), _mm256_unpackhi_epi32(even, odd));
        __m256i bytes = _mm256_packus_epi16(pairs, pairs);
        _mm_storel_epi64((__m128i *)(out + 2 * j), _mm256_castsi256_si128(bytes));
        _mm_storel_epi64((__m128i *)(out + 2 * j + 8), _mm256_extracti128_si256(bytes, 1));
    }
#endif
    for (; j < pw; j++) {
        int32_t s3 = 3 * s[j];
        out[2 * j] = (uint8_t)((s3 + s[j - 1] + bl) >> shift);
        if (2 * j + 1 < w) out[2 * j + 1] = (uint8_t)((s3 + s[j + 1] + br) >> shift);
    }
}

static void to_rgb_row(const int16_t *restrict y, const uint8_t *restrict cb, const uint8_t *restrict cr, long w,
                       const int32_t *restrict m, uint8_t *restrict r, uint8_t *restrict g, uint8_t *restrict b) {
    for (long x = 0; x < w; x++) {
        int32_t u = cb[x] - 128, v = cr[x] - 128;
        r[x] = (uint8_t)clamp255(y[x] + ((m[0] * u + m[1] * v + 32768) >> 16));
        g[x] = (uint8_t)clamp255(y[x] + ((m[2] * u + m[3] * v + 32768) >> 16));
        b[x] = (uint8_t)clamp255(y[x] + ((m[4] * u + m[5] * v + 32768) >> 16));
    }
}

/* Scratch layout of one image, each part rounded up to 64 bytes. */
typedef struct {
    long h, w, n, rows, cols, ph, pw, crows, ccols;
    int sub;
    long planes, chroma, rowbuf, total;  /* byte offsets of the parts after the 8-bit pixels, and the total */
} layout;

static long round64(long bytes) { return (bytes + 63) / 64 * 64; }

static layout plan(long c, long h, long w, int fv, int fh, int backward) {
    layout l;
    l.h = h, l.w = w, l.n = h * w;
    l.rows = ceil_div(h, 8) * 8, l.cols = ceil_div(w, 8) * 8;
    l.sub = c == 3 && (fv > 1 || fh > 1);
    l.ph = ceil_div(h, fv), l.pw = ceil_div(w, fh);
    l.crows = l.sub ? ceil_div(l.ph, 8) * 8 : l.rows, l.ccols = l.sub ? ceil_div(l.pw, 8) * 8 : l.cols;
    long sample = backward ? (long)sizeof(double) : (long)sizeof(int16_t);
    l.planes = backward ? 0 : round64(c * l.n + 2 * w);  /* forward: 8-bit pixels and two upsampled rows */
    l.chroma = l.planes + round64(l.rows * l.cols * sample);
    l.rowbuf = l.chroma + (c == 3 ? round64(2 * l.crows * l.ccols * sample) : 0);
    l.total = l.rowbuf + round64((w + 2) * (backward ? 5 * (long)sizeof(double) : (long)sizeof(int32_t)));
    return l;
}

long scratch_bytes(long channels, long height, long width, int fv, int fh, int backward) {
    return plan(channels, height, width, fv, fh, backward).total;
}

/* One image through encode and decode; returns whether a value is outside [low, high] or not finite. */
static int image_round_trip(const job *j, long b, uint8_t *scratch) {
    long c = j->channels;
    layout l = plan(c, j->height, j->width, j->fv, j->fh, 0);
    long h = l.h, w = l.w, n = l.n, rows = l.rows, cols = l.cols, crows = l.crows, ccols = l.ccols;
    uint8_t *pixels = scratch;
    int16_t *luma = (int16_t *)(scratch + l.planes), *cb = (int16_t *)(scratch + l.chroma), *cr = cb + crows * ccols;
    int32_t *colsum = (int32_t *)(scratch + l.rowbuf);
    quantiser luma_q, chroma_q;
    prepare_quantiser(&luma_q, j->tables, b * j->table_stride, j->is_double);
    prepare_quantiser(&chroma_q, j->tables, b * j->table_stride + 64, j->is_double);
    int flags = load(j, b, pixels);
    if (c == 3) to_ycbcr(pixels, n, j->k->to_ycc);
    to_grid(pixels, h, w, luma, rows, cols);
    plane_round_trip(luma, rows, cols, j->matrices, &luma_q);
    if (c == 3) {
        for (int p = 1; p < 3; p++) {
            int16_t *dst = p == 1 ? cb : cr;
            if (l.sub) downsample(pixels + p * n, h, w, j->fv, dst, crows, ccols);
            else to_grid(pixels + p * n, h, w, dst, crows, ccols);
            plane_round_trip(dst, crows, ccols, j->matrices, &chroma_q);
        }
        uint8_t *ucb = pixels + c * n, *ucr = ucb + w;  /* one upsampled row of each chroma plane */
        for (long y = 0; y < h; y++) {
            if (l.sub) {
                upsample_row(cb, l.ph, l.pw, ccols, j->fv, j->fancy, y, w, colsum, ucb);
                upsample_row(cr, l.ph, l.pw, ccols, j->fv, j->fancy, y, w, colsum, ucr);
            } else {
                for (long x = 0; x < w; x++) ucb[x] = (uint8_t)cb[y * ccols + x], ucr[x] = (uint8_t)cr[y * ccols + x];
            }
            to_rgb_row(luma + y * cols, ucb, ucr, w, j->k->to_rgb, pixels + y * w, pixels + n + y * w,
                       pixels + 2 * n + y * w);
        }
    } else {
        for (long y = 0; y < h; y++)
            for (long x = 0; x < w; x++) pixels[y * w + x] = (uint8_t)luma[y * cols + x];
    }
    store(j, b, pixels, flags & HAS_NAN);
    return (flags & OUT_OF_RANGE) != 0;
}

/* ---- the adjoint (backward pass) ---- */

/* Row y of channel c of image b of the gradient, as doubles (contiguous rows read as one vector loop). */
static void read_gradient_row(const job *j, long b, long c, long y, double *restrict out) {
    long at = b * j->stride[0] + c * j->stride[1] + y * j->stride[2], step = j->stride[3], w = j->width;
    if (j->is_double) {
        const double *restrict g = (const double *)j->input + at;
        if (step == 1) memcpy(out, g, w * sizeof(double));
        else if (step == 0) for (long x = 0; x < w; x++) out[x] = g[0];  /* broadcast: the gradient of a sum */
        else for (long x = 0; x < w; x++) out[x] = g[x * step];
    } else {
        const float *restrict g = (const float *)j->input + at;
        if (step == 1) for (long x = 0; x < w; x++) out[x] = g[x];
        else if (step == 0) for (long x = 0; x < w; x++) out[x] = g[0];
        else for (long x = 0; x < w; x++) out[x] = g[x * step];
    }
}

/* G -> C G R^T for every 8x8 block of a plane (C, R: the adjoint's column and row matrices). Not
 * bit-exact anyway, so the products fuse into multiply-adds. Each output row is two 4-lane vectors:
 * sum_k (broadcast scalar) x (row k). */
__attribute__((optimize("fp-contract=fast"))) static void plane_adjoint(double *plane, long rows, long cols,
                                                                          const double *m) {
    double rt[64];                       /* R^T, so that both products read contiguous rows */
    for (int k = 0; k < 8; k++)
        for (int u = 0; u < 8; u++) rt[k * 8 + u] = m[64 + u * 8 + k];
    for (long r0 = 0; r0 < rows; r0 += 8)
        for (long c0 = 0; c0 < cols; c0 += 8) {
            double *p = plane + r0 * cols + c0, t[64];
#if defined(__AVX2__) && defined(__FMA__)
            for (int r = 0; r < 8; r++) {
                __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
                for (int k = 0; k < 8; k++) {
                    __m256d c = _mm256_broadcast_sd(m + r * 8 + k);
                    lo = _mm256_fmadd_pd(c, _mm256_loadu_pd(p + k * cols), lo);
                    hi = _mm256_fmadd_pd(c, _mm256_loadu_pd(p + k * cols + 4), hi);
                }
                _mm256_storeu_pd(t + r * 8, lo), _mm256_storeu_pd(t + r * 8 + 4, hi);
            }
            for (int r = 0; r < 8; r++) {
                __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
                for (int k = 0; k < 8; k++) {
                    __m256d c = _mm256_broadcast_sd(t + r * 8 + k);
                    lo = _mm256_fmadd_pd(c, _mm256_loadu_pd(rt + k * 8), lo);
                    hi = _mm256_fmadd_pd(c, _mm256_loadu_pd(rt + k * 8 + 4), hi);
                }
                _mm256_storeu_pd(p + r * cols, lo), _mm256_storeu_pd(p + r * cols + 4, hi);
            }
#else
            for (int r = 0; r < 8; r++)
                for (int u = 0; u < 8; u++) {
                    double acc = 0.0;
                    for (int k = 0; k < 8; k++) acc += m[r * 8 + k] * p[k * cols + u];
                    t[r * 8 + u] = acc;
                }
            for (int r = 0; r < 8; r++)
                for (int u = 0; u < 8; u++) {
                    double acc = 0.0;
                    for (int k = 0; k < 8; k++) acc += t[r * 8 + k] * rt[k * 8 + u];
                    p[r * cols + u] = acc;
                }
#endif
        }
}

/* Adjoint of edge replication from h x w to the grid: the copies' gradients added to the edge. */
static void fold_edges(double *plane, long rows, long cols, long h, long w) {
    for (long r = 0; r < rows; r++)
        for (long c = w; c < cols; c++) plane[r * cols + w - 1] += plane[r * cols + c];
    for (long r = h; r < rows; r++)
        for (long c = 0; c < w; c++) plane[(h - 1) * cols + c] += plane[r * cols + c];
}

/* Adjoint of upsample_row for output row y: the row's chroma gradient g (w values; g[w .. 2 pw] must
 * have room and is overwritten with zeros, the crop's adjoint) into the plane; acc: pw + 1 values. */
static void upsample_row_adjoint(double *plane, long ph, long pw, long cols, int fv, int fancy, long y, long w,
                                 double *restrict g, double *restrict acc) {
    long i = fv == 2 ? y / 2 : y;
    double *row = plane + i * cols;
    if (!fancy || pw <= 2) {             /* replication: each sample's box summed */
        for (long x = w; x < 2 * pw; x++) g[x] = 0.0;
        for (long j = 0; j < pw; j++) row[j] += g[2 * j] + g[2 * j + 1];
        return;
    }
    /* out[2j] = 3 s[j] + s[j - 1], out[2j + 1] = 3 s[j] + s[j + 1], the edge samples standing in for the
     * missing neighbours (the triangle filters' scale is applied at the end) */
    for (long x = w; x < 2 * pw + 1; x++) g[x] = 0.0;
    acc[0] = 4.0 * g[0] + 3.0 * g[1] + g[2];
    for (long j = 1; j < pw; j++) acc[j] = 3.0 * (g[2 * j] + g[2 * j + 1]) + g[2 * j - 1] + g[2 * j + 2];
    acc[pw - 1] += g[2 * pw - 1];
    if (fv == 2) {                       /* vertical triangle */
        long nb = y % 2 == 0 ? (i > 0 ? i - 1 : 0) : (i < ph - 1 ? i + 1 : ph - 1);
        double *other = plane + nb * cols;
        for (long j = 0; j < pw; j++) row[j] += 3.0 * acc[j];
        for (long j = 0; j < pw; j++) other[j] += acc[j];
    } else {
        for (long j = 0; j < pw; j++) row[j] += acc[j];
    }
}

/* Adjoint of downsample and the edge replication around it, for full-resolution row y: the chroma
 * grid's (already folded) gradients shared among each box, the copies beyond the right edge added
 * to the last column, and the rows beyond the bottom edge to the last row. */
static void downsample_row_adjoint(const double *restrict plane, long h, long w, int fv, long ph, long cols, long y,
                                   double *restrict out) {
    const double *row = plane + (y / fv) * cols;
    double share = 1.0 / (fv * 2);
    for (long j = 0; j < w / 2; j++) out[2 * j] = out[2 * j + 1] = row[j] * share;
    if (w % 2) out[w - 1] = row[w / 2] * share;
    for (long x = w; x < cols * 2; x++) out[w - 1] += row[x / 2] * share;
    if (y == h - 1)                      /* rows h .. ph fv - 1 replicate row h - 1 */
        for (long x = 0; x < w; x++) out[x] *= (double)(ph * fv - h + 1);
}

/* The three channels' rows of row y of the gradient (one pass over a channels-last row). */
static void read_gradient_rows(const job *j, long b, long y, double *restrict r, double *restrict g,
                               double *restrict bl) {
    if (j->is_double || !interleaved(3, j->stride)) {
        read_gradient_row(j, b, 0, y, r), read_gradient_row(j, b, 1, y, g), read_gradient_row(j, b, 2, y, bl);
        return;
    }
    const float *restrict x = (const float *)j->input + b * j->stride[0] + y * j->stride[2];
    for (long i = 0; i < j->width; i++) r[i] = x[3 * i], g[i] = x[3 * i + 1], bl[i] = x[3 * i + 2];
}

static void store_gradient(const job *j, long b, long c, long y, const double *g) {
    long w = j->width, step = j->ostride[3], at = b * j->ostride[0] + c * j->ostride[1] + y * j->ostride[2];
    if (j->is_double) {
        double *o = (double *)j->output + at;
        if (step == 1) memcpy(o, g, w * sizeof(double));
        else for (long x = 0; x < w; x++) o[x * step] = g[x];
    } else {
        float *o = (float *)j->output + at;
        if (step == 1) for (long x = 0; x < w; x++) o[x] = (float)g[x];
        else for (long x = 0; x < w; x++) o[x * step] = (float)g[x];
    }
}

/* The three channels' rows of row y of the input's gradient. */
static void store_gradient_rows(const job *j, long b, long y, const double *restrict r, const double *restrict g,
                                const double *restrict bl) {
    if (j->is_double || !interleaved(3, j->ostride)) {
        store_gradient(j, b, 0, y, r), store_gradient(j, b, 1, y, g), store_gradient(j, b, 2, y, bl);
        return;
    }
    float *restrict o = (float *)j->output + b * j->ostride[0] + y * j->ostride[2];
    for (long x = 0; x < j->width; x++) o[3 * x] = (float)r[x], o[3 * x + 1] = (float)g[x], o[3 * x + 2] = (float)bl[x];
}

/* The colour conversion's adjoint for one row: the R, G, B gradients to the Y row and the full-resolution
 * Cb and Cr rows (m: the Cb and Cr weights of R, G and B, the YCbCr -> RGB matrix's transpose). */
static void to_rgb_adjoint_row(const double *restrict r, const double *restrict g, const double *restrict bl, long w,
                               const double *m, double *restrict y, double *restrict cb, double *restrict cr) {
    const double rcb = m[0], gcb = m[1], bcb = m[2], rcr = m[3], gcr = m[4], bcr = m[5];
    for (long x = 0; x < w; x++) {
        y[x] = r[x] + g[x] + bl[x];
        cb[x] = rcb * r[x] + gcb * g[x] + bcb * bl[x];
        cr[x] = rcr * r[x] + gcr * g[x] + bcr * bl[x];
    }
}

/* The RGB -> YCbCr conversion's adjoint for one row: the Y, Cb, Cr gradients to the R, G, B rows (m: the
 * weights of Y, Cb and Cr for R, then for G, then for B). */
static void to_ycbcr_adjoint_row(const double *restrict y, const double *restrict cb, const double *restrict cr,
                                 long w, const double *m, double *restrict r, double *restrict g, double *restrict bl) {
    for (long x = 0; x < w; x++) r[x] = m[0] * y[x] + m[1] * cb[x] + m[2] * cr[x];
    for (long x = 0; x < w; x++) g[x] = m[3] * y[x] + m[4] * cb[x] + m[5] * cr[x];
    for (long x = 0; x < w; x++) bl[x] = m[6] * y[x] + m[7] * cb[x] + m[8] * cr[x];
}

static void image_adjoint(const job *j, long b, uint8_t *scratch) {
    long c = j->channels;
    layout l = plan(c, j->height, j->width, j->fv, j->fh, 1);
    long h = l.h, w = l.w, rows = l.rows, cols = l.cols, crows = l.crows, ccols = l.ccols;
    double *luma = (double *)(scratch + l.planes), *cb = (double *)(scratch + l.chroma), *cr = cb + crows * ccols;
    double *g0 = (double *)(scratch + l.rowbuf), *g1 = g0 + w + 2, *g2 = g1 + w + 2, *g3 = g2 + w + 2, *g4 = g3 + w + 2;
    memset(scratch, 0, l.rowbuf);        /* the crops' adjoint: zeros outside the image */
    const int32_t *m = j->k->to_rgb;
    const double f = 1.0 / 65536.0;
    const double transpose[6] = {m[0] * f, m[2] * f, m[4] * f, m[1] * f, m[3] * f, m[5] * f};
    for (long y = 0; y < h; y++) {       /* colour conversion's and upsampling's adjoints, row by row */
        double *ly = luma + y * cols;
        if (c == 1) {
            read_gradient_row(j, b, 0, y, ly);
            continue;
        }
        /* full-resolution chroma rows; at 4:4:4 the planes themselves */
        double *ucb = l.sub ? g3 : cb + y * ccols, *ucr = l.sub ? g4 : cr + y * ccols;
        read_gradient_rows(j, b, y, g0, g1, g2);
        to_rgb_adjoint_row(g0, g1, g2, w, transpose, ly, ucb, ucr);
        if (l.sub) {
            upsample_row_adjoint(cb, l.ph, l.pw, ccols, j->fv, j->fancy, y, w, ucb, g0);
            upsample_row_adjoint(cr, l.ph, l.pw, ccols, j->fv, j->fancy, y, w, ucr, g0);
        }
    }
    if (l.sub && j->fancy && l.pw > 2) { /* the triangle filters' scale */
        double scale = j->fv == 2 ? 1.0 / 16.0 : 1.0 / 4.0;
        for (long i = 0; i < crows * ccols; i++) cb[i] *= scale, cr[i] *= scale;
    }
    plane_adjoint(luma, rows, cols, j->adjoint);
    fold_edges(luma, rows, cols, h, w);
    if (c == 3) {
        plane_adjoint(cb, crows, ccols, j->adjoint);
        plane_adjoint(cr, crows, ccols, j->adjoint);
        if (l.sub) {
            fold_edges(cb, crows, ccols, l.ph, ccols);
            fold_edges(cr, crows, ccols, l.ph, ccols);
        } else {
            fold_edges(cb, rows, cols, h, w);
            fold_edges(cr, rows, cols, h, w);
        }
    }
    const int32_t *t = j->k->to_ycc;     /* RGB -> YCbCr's transpose, by columns */
    const double from_ycc[9] = {t[0] * f, t[3] * f, t[6] * f, t[1] * f, t[4] * f, t[7] * f,
                                t[2] * f, t[5] * f, t[8] * f};
    for (long y = 0; y < h; y++) {
        double *ly = luma + y * cols;
        if (c == 1) {
            store_gradient(j, b, 0, y, ly);
            continue;
        }
        const double *ucb = g1, *ucr = g2;
        if (l.sub) {
            downsample_row_adjoint(cb, h, w, j->fv, l.ph, ccols, y, g1);
            downsample_row_adjoint(cr, h, w, j->fv, l.ph, ccols, y, g2);
        } else {
            ucb = cb + y * cols, ucr = cr + y * cols;
        }
        to_ycbcr_adjoint_row(ly, ucb, ucr, w, from_ycc, g0, g3, g4);  /* g3, g4 free here: chroma is in g1, g2 */
        store_gradient_rows(j, b, y, g0, g3, g4);
    }
}

/* Images shared among `threads` threads of OpenMP: torch's own pool when torch runs on OpenMP (the
 * library is linked against the libgomp already loaded), so no second set of threads competes with
 * torch's spinning workers. scratch holds one part per thread (threads <= batch: the caller's). */
static long run(job *j, int threads, int backward) {
    long flagged = 0;  /* images with a value outside [low, high] or not finite (forward only) */
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) reduction(+:flagged)
    for (long b = 0; b < j->batch; b++) {
#ifdef _OPENMP
        uint8_t *scratch = j->scratch + omp_get_thread_num() * j->scratch_size;
#else
        uint8_t *scratch = j->scratch;
#endif
        if (backward) image_adjoint(j, b, scratch);
        else flagged += image_round_trip(j, b, scratch);
    }
    return flagged;
}

/* strides: the input's four strides, the output's four, then the tables' batch stride (in elements).
 * range: the values allowed, low and high (float32 values for a float32 input). Returns the number of
 * images with a value outside them or not finite. */
long integer_round_trip(const void *input, const long *strides, void *output, const void *tables,
                        const constants *k, const double *range, uint8_t *scratch, long scratch_size, long batch,
                        long channels, long height, long width, int fv, int fh, int is_double, int fancy,
                        int threads) {
    block_matrices matrices;
    prepare_matrices(&matrices, k);
    job j = {input, output, tables, strides[8], k, &matrices, NULL, scratch, scratch_size, batch, channels, height,
             width,
             {strides[0], strides[1], strides[2], strides[3]}, {strides[4], strides[5], strides[6], strides[7]},
             fv, fh, is_double, fancy, range[0], range[1]};
    return run(&j, threads, 0);
}

void integer_round_trip_adjoint(const void *grad, const long *strides, void *output, const constants *k,
                                const double *adjoint, uint8_t *scratch, long scratch_size, long batch,
                                long channels, long height, long width, int fv, int fh, int is_double, int fancy,
                                int threads) {
    job j = {grad, output, NULL, 0, k, NULL, adjoint, scratch, scratch_size, batch, channels, height, width,
             {strides[0], strides[1], strides[2], strides[3]}, {strides[4], strides[5], strides[6], strides[7]},
             fv, fh, is_double, fancy, 0.0, 0.0};
    run(&j, threads, 1);
}
