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
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int32_t fdct[64];    /* forward pass: F[frequency][sample], 13 fraction bits */
    int32_t idct[64];    /* inverse pass: I[sample][frequency] */
    int32_t to_ycc[9];   /* rows Y, Cb, Cr over R, G, B, times 2^16 */
    int32_t to_rgb[6];   /* rows R, G, B over (Cb - 128, Cr - 128), times 2^16 */
} constants;

typedef struct {
    const void *input;   /* (B, C, H, W) float32 or float64 in [0, 1] */
    void *output;        /* the same shape and dtype: 8-bit values / 255 */
    const int32_t *tables; /* (B, 2, 64) integer tables, natural order */
    const constants *k;
    long batch, channels, height, width;
    long stride[4];      /* the input's strides, in elements */
    int fv, fh, is_double, fancy;
    long next;           /* the next image to take (atomic) */
    int failed;          /* set when scratch memory ran out */
} job;

static int clamp255(int v) { return v < 0 ? 0 : (v > 255 ? 255 : v); }
static long ceil_div(long a, long b) { return (a + b - 1) / b; }

/* The pass matrices in the layouts the block loops read (each inner loop one 8-lane vector), and
 * the quantiser's reciprocals. */
typedef struct {
    int32_t ft[64], f[64], i[64], it[64];   /* F^T, F, I, I^T */
    int32_t table[64];
    double reciprocal[64];                  /* 1 / (8 Q) */
} block_constants;

static void prepare(block_constants *bc, const constants *k, const int32_t *table) {
    for (int r = 0; r < 8; r++)
        for (int c = 0; c < 8; c++) {
            bc->f[r * 8 + c] = k->fdct[r * 8 + c], bc->ft[c * 8 + r] = k->fdct[r * 8 + c];
            bc->i[r * 8 + c] = k->idct[r * 8 + c], bc->it[c * 8 + r] = k->idct[r * 8 + c];
        }
    for (int n = 0; n < 64; n++) bc->table[n] = table[n], bc->reciprocal[n] = 1.0 / (8.0 * table[n]);
}

/* One 8x8 block of samples (stride apart, values 0..255) through DCT, quantisation, dequantisation
 * and inverse DCT, in place. */
static void block_round_trip(int16_t *p, long stride, const block_constants *k) {
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
        for (int u = 0; u < 8; u++) {
            /* islow's output s is 8 x the orthonormal coefficient; the level is round-half-away of
             * s / (8 Q) = floor((|s| + 4 Q) / (8 Q)) with the sign of s. The quotient of integers below
             * 2^15 by 8 Q <= 2040 is either an integer or at least 1/2040 below the next one, and the
             * double product errs by < 2^-35: adding 1e-6 before truncating gives the exact floor. */
            int32_t s = acc[u] >> 15, t = k->table[v * 8 + u];
            int32_t m = s < 0 ? -s : s;
            int32_t level = (int32_t)((double)(m + 4 * t) * k->reciprocal[v * 8 + u] + 1e-6);
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

static void plane_round_trip(int16_t *plane, long rows, long cols, const constants *k, const int32_t *table) {
    block_constants bc;
    prepare(&bc, k, table);
    for (long r = 0; r < rows; r += 8)
        for (long c = 0; c < cols; c += 8) block_round_trip(plane + r * cols + c, cols, &bc);
}

/* Input to 8-bit samples: clamp(floor(255 x + 1/2), 0, 255), the multiply-add fused as torch's is.
 * The clamps are comparisons that map to max / min instructions (NaN -> 0; inputs are checked
 * before). The input may have any strides (channels-last batches need no copy). */
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
static void load_row_float(const float *restrict x, long step, long w, uint8_t *restrict d) {
    if (step == 1)  /* the same loop, vectorised */
        for (long i = 0; i < w; i++) d[i] = (uint8_t)(int32_t)sample_float(x[i]);
    else
        for (long i = 0; i < w; i++) d[i] = (uint8_t)(int32_t)sample_float(x[i * step]);
}
static void load_row_double(const double *restrict x, long step, long w, uint8_t *restrict d) {
    if (step == 1)
        for (long i = 0; i < w; i++) d[i] = (uint8_t)(int32_t)sample_double(x[i]);
    else
        for (long i = 0; i < w; i++) d[i] = (uint8_t)(int32_t)sample_double(x[i * step]);
}

static void load(const job *j, long b, uint8_t *rgb) {
    for (long c = 0; c < j->channels; c++)
        for (long y = 0; y < j->height; y++) {
            long offset = b * j->stride[0] + c * j->stride[1] + y * j->stride[2];
            uint8_t *d = rgb + (c * j->height + y) * j->width;
            if (j->is_double) load_row_double((const double *)j->input + offset, j->stride[3], j->width, d);
            else load_row_float((const float *)j->input + offset, j->stride[3], j->width, d);
        }
}

static void store(const job *j, long b, const uint8_t *pixels) {
    long n = j->channels * j->height * j->width;
    if (j->is_double) {
        double *y = (double *)j->output + b * n;
        for (long i = 0; i < n; i++) y[i] = pixels[i] / 255.0;
    } else {
        float *y = (float *)j->output + b * n;
        for (long i = 0; i < n; i++) y[i] = pixels[i] / 255.0f;
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
static void to_grid(const uint8_t *src, long h, long w, int16_t *dst, long rows, long cols) {
    for (long r = 0; r < rows; r++) {
        const uint8_t *s = src + (r < h ? r : h - 1) * w;
        int16_t *d = dst + r * cols;
        for (long c = 0; c < w; c++) d[c] = s[c];
        for (long c = w; c < cols; c++) d[c] = s[w - 1];
    }
}

/* Full-resolution chroma -> the fv x fh box averages on the rows x cols chroma grid. libjpeg
 * replicates the full-resolution edge to whole boxes and the last box row down to the grid; the bias
 * alternates along the row (1, 2 for 2x2 boxes; 0, 1 for 2x1). */
static void downsample(const uint8_t *src, long h, long w, int fv, int fh, int16_t *dst, long rows, long cols) {
    long last = ceil_div(h, fv) - 1, whole = w / fh;  /* output columns whose box lies inside the image */
    int shift = (fv == 2) + (fh == 2), first = fv * fh == 4 ? 1 : 0;
    for (long r = 0; r < rows; r++) {
        long rr = r < last ? r : last;
        const uint8_t *s0 = src + (fv * rr < h ? fv * rr : h - 1) * w;
        const uint8_t *s1 = fv == 2 ? src + (fv * rr + 1 < h ? fv * rr + 1 : h - 1) * w : s0;
        int16_t *d = dst + r * cols;
        if (fh == 2 && fv == 2)
            for (long c = 0; c < whole; c++) d[c] = (int16_t)((s0[2 * c] + s0[2 * c + 1] + s1[2 * c] + s1[2 * c + 1] + 1 + (c & 1)) >> 2);
        else if (fh == 2)
            for (long c = 0; c < whole; c++) d[c] = (int16_t)((s0[2 * c] + s0[2 * c + 1] + (c & 1)) >> 1);
        else  /* fh == 1: only the rows are boxed (not a JPEG subsampling diffjpeg writes, kept general) */
            for (long c = 0; c < whole; c++) d[c] = (int16_t)((s0[c] + s1[c] + first + (c & 1)) >> shift);
        for (long c = whole; c < cols; c++) {  /* boxes over the right edge: replicated samples */
            int32_t sum = first + (int32_t)(c & 1);
            for (int e = 0; e < fh; e++) {
                long x = fh * c + e < w ? fh * c + e : w - 1;
                sum += s0[x] + (fv == 2 ? s1[x] : 0);
            }
            d[c] = (int16_t)(sum >> shift);
        }
    }
}

/* One output row of a chroma plane (ph x pw on a grid of stride cols) upsampled to width w. */
static void upsample_row(const int16_t *plane, long ph, long pw, long cols, int fv, int fh, int fancy, long y,
                         long w, int32_t *colsum, uint8_t *out) {
    long i = fv == 2 ? y / 2 : y;
    const int16_t *row = plane + i * cols;
    if (!fancy || pw <= 2) {             /* replication; libjpeg's fancy filter needs 3 samples */
        if (fh == 2)
            for (long x = 0; x < w; x++) out[x] = (uint8_t)row[x / 2];
        else
            for (long x = 0; x < w; x++) out[x] = (uint8_t)row[x];
        return;
    }
    if (fv == 2) {                       /* vertical triangle: 3 x nearest row + the other neighbour */
        long n = y % 2 == 0 ? (i > 0 ? i - 1 : 0) : (i < ph - 1 ? i + 1 : ph - 1);
        const int16_t *other = plane + n * cols;
        for (long j = 0; j < pw; j++) colsum[j] = 3 * row[j] + other[j];
    } else {
        for (long j = 0; j < pw; j++) colsum[j] = row[j];
    }
    /* horizontal triangle, edges replicated: (3 s[j] + s[j -/+ 1] + bias) >> shift */
    int32_t bl = fv == 2 ? 8 : 1, br = fv == 2 ? 7 : 2, shift = fv == 2 ? 4 : 2;
    long pairs = w / 2;                  /* output pixels 2 j and 2 j + 1 for j < pairs; w is 2 pw or 2 pw - 1 */
    out[0] = (uint8_t)((4 * colsum[0] + bl) >> shift);
    for (long j = 1; j < pairs; j++) out[2 * j] = (uint8_t)((3 * colsum[j] + colsum[j - 1] + bl) >> shift);
    for (long j = 0; j < pairs && j < pw - 1; j++)
        out[2 * j + 1] = (uint8_t)((3 * colsum[j] + colsum[j + 1] + br) >> shift);
    if (pairs == pw) out[2 * pw - 1] = (uint8_t)((4 * colsum[pw - 1] + br) >> shift);
    else out[2 * pairs] = (uint8_t)((3 * colsum[pairs] + colsum[pairs - 1] + bl) >> shift);  /* odd w */
}

static void to_rgb_row(const int16_t *y, const uint8_t *cb, const uint8_t *cr, long w, const int32_t *m,
                       uint8_t *r, uint8_t *g, uint8_t *b) {
    for (long x = 0; x < w; x++) {
        int32_t u = cb[x] - 128, v = cr[x] - 128;
        r[x] = (uint8_t)clamp255(y[x] + ((m[0] * u + m[1] * v + 32768) >> 16));
        g[x] = (uint8_t)clamp255(y[x] + ((m[2] * u + m[3] * v + 32768) >> 16));
        b[x] = (uint8_t)clamp255(y[x] + ((m[4] * u + m[5] * v + 32768) >> 16));
    }
}

/* One image; returns 0 when out of memory. */
static int image_round_trip(const job *j, long b) {
    long h = j->height, w = j->width, n = h * w, c = j->channels;
    long rows = ceil_div(h, 8) * 8, cols = ceil_div(w, 8) * 8;
    int sub = c == 3 && (j->fv > 1 || j->fh > 1);
    long ph = ceil_div(h, j->fv), pw = ceil_div(w, j->fh);
    long crows = sub ? ceil_div(ph, 8) * 8 : rows, ccols = sub ? ceil_div(pw, 8) * 8 : cols;
    long grid = rows * cols + (c == 3 ? 2 * crows * ccols : 0);
    uint8_t *pixels = malloc(c * n + 2 * w);
    int16_t *planes = malloc(grid * sizeof(int16_t));
    int32_t *colsum = malloc(w * sizeof(int32_t));
    if (!pixels || !planes || !colsum) {
        free(pixels), free(planes), free(colsum);
        return 0;
    }
    const int32_t *luma_table = j->tables + b * 128, *chroma_table = luma_table + 64;
    int16_t *luma = planes, *cb = planes + rows * cols, *cr = cb + crows * ccols;
    load(j, b, pixels);
    if (c == 3) to_ycbcr(pixels, n, j->k->to_ycc);
    to_grid(pixels, h, w, luma, rows, cols);
    plane_round_trip(luma, rows, cols, j->k, luma_table);
    if (c == 3) {
        for (int p = 1; p < 3; p++) {
            int16_t *dst = p == 1 ? cb : cr;
            if (sub) downsample(pixels + p * n, h, w, j->fv, j->fh, dst, crows, ccols);
            else to_grid(pixels + p * n, h, w, dst, crows, ccols);
            plane_round_trip(dst, crows, ccols, j->k, chroma_table);
        }
        uint8_t *ucb = pixels + c * n, *ucr = ucb + w;  /* one upsampled row of each chroma plane */
        for (long y = 0; y < h; y++) {
            if (sub) {
                upsample_row(cb, ph, pw, ccols, j->fv, j->fh, j->fancy, y, w, colsum, ucb);
                upsample_row(cr, ph, pw, ccols, j->fv, j->fh, j->fancy, y, w, colsum, ucr);
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
    store(j, b, pixels);
    free(pixels), free(planes), free(colsum);
    return 1;
}

static void *worker(void *arg) {
    job *j = arg;
    for (;;) {
        long b = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        if (b >= j->batch) return NULL;
        if (!image_round_trip(j, b)) __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
    }
}

/* The round trip of a batch on up to `threads` threads (images shared among them); 0 on success,
 * 1 when memory ran out. */
int integer_round_trip(const void *input, const long *strides, void *output, const int32_t *tables,
                       const constants *k, long batch, long channels, long height, long width, int fv, int fh,
                       int is_double, int fancy, int threads) {
    job j = {input, output, tables, k, batch, channels, height, width,
             {strides[0], strides[1], strides[2], strides[3]}, fv, fh, is_double, fancy, 0, 0};
    if (threads > batch) threads = (int)batch;
    if (threads > 64) threads = 64;
    pthread_t ids[64];
    int started = 0;
    for (; started < threads - 1; started++)
        if (pthread_create(&ids[started], NULL, worker, &j) != 0) break;
    worker(&j);                          /* this thread works too */
    for (int i = 0; i < started; i++) pthread_join(ids[i], NULL);
    return j.failed;
}
