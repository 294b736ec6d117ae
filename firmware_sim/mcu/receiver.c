#include "receiver.h"

#include <arm_acle.h>
#include <math.h>
#include <string.h>

#include "hash.h"

static uint16_t u16_at(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t u32_at(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static float f32_at(const uint8_t *p) {
    float v;
    memcpy(&v, p, 4);
    return v;
}

/* e^x for x ≤ 88 in single precision: x = k·ln2 + r with |r| ≤ ln2/2, e^r by its Taylor polynomial to r^6 (relative
 * error below 2e-7), 2^k by the exponent bits. The C library's expf computes in double, which this FPU does not have. */
static float exp_f(float x) {
    if (!(x >= -87.0f)) return x != x ? x : 0.0f; /* NaN stays NaN; below e^-87 rounds to 0 here */
    if (x > 88.0f) return INFINITY;
    int k = (int)(x * 1.44269504f + (x < 0.0f ? -0.5f : 0.5f));
    float r = (x - (float)k * 0.693145752f) - (float)k * 1.42860677e-6f; /* ln2 split so that k·ln2_hi is exact */
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
    union {
        uint32_t bits;
        float value;
    } scale = {.bits = (uint32_t)(k + 127) << 23};
    return p * scale.value;
}

/* ln x: x = m·2^e with m in [√½, √2), ln m = 2·atanh(s), s = (m − 1)/(m + 1), by its series to s^9 (error below 1e-9). */
static float log_f(float x) {
    union {
        float value;
        uint32_t bits;
    } u = {.value = x};
    if (!(x > 0.0f) || u.bits >= 0x7F800000u) return x == 0.0f ? -INFINITY : x > 0.0f ? x : NAN;
    int e = -127;
    if (u.bits < 0x00800000u) u.value *= 8388608.0f, e -= 23; /* subnormal: normalise by 2^23 */
    e += (int)(u.bits >> 23);
    u.bits = (u.bits & 0x007FFFFFu) | 0x3F800000u;
    if (u.value > 1.41421356f) u.value *= 0.5f, e++;
    float s = (u.value - 1.0f) / (u.value + 1.0f), s2 = s * s;
    float series = 1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9))));
    return (float)e * 0.693147181f + 2.0f * s * series;
}

static int all_finite(const float *v, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return 0;
    return 1;
}

/* The header's fields, checked one by one against their ranges. */
static const char *read_header(receiver_t *r, const uint8_t *h, uint32_t length) {
    static const uint8_t MAGIC[4] = {'M', 'E', 'M', 'C'};
    if (length < HEADER_BYTES + TRAILER_BYTES) return "image shorter than its header and hash";
    if (memcmp(h, MAGIC, 4) != 0) return "image magic is not MEMC";
    if (u32_at(h + 4) != 0x01020304u) return "image byte-order mark is not 0x01020304 little-endian";
    if (u16_at(h + 8) != 1) return "image layout version is not 1";
    if (u16_at(h + 10) != HEADER_BYTES) return "image header length is not 80";
    if (u32_at(h + 12) != length) return "image total length differs from the bytes received";
    r->features = u16_at(h + 16), r->classes = u16_at(h + 18), r->layers = u16_at(h + 20), r->context = u16_at(h + 22);
    r->steps = u16_at(h + 24), r->flags = u16_at(h + 26), r->adapts = u32_at(h + 28);
    r->lr = f32_at(h + 32), r->prox = f32_at(h + 36);
    r->st_samples = u16_at(h + 44), r->st_pilots = u16_at(h + 46), r->atol = f32_at(h + 48);
    if (r->features < 1 || r->features > MAX_WIDTH) return "features outside 1..256";
    if (r->classes < 2 || r->classes > MAX_WIDTH) return "classes outside 2..256";
    if (r->layers < 1 || r->layers > MAX_LAYERS) return "layers outside 1..8";
    if (r->context > MAX_CONTEXT || r->features + r->context > MAX_WIDTH) return "context outside 0..64 or inputs above 256";
    if (r->steps < 1 || r->steps > MAX_STEPS) return "inner steps outside 1..1024";
    if (r->flags & ~1u) return "unknown flag bits";
    uint32_t tensors = 2u * r->layers + (r->context ? 1u : 0u);
    if (r->adapts == 0 || r->adapts >> tensors) return "adapted-tensor mask is empty or names a tensor the network lacks";
    if (!isfinite(r->lr) || !isfinite(r->prox) || r->prox < 0) return "inner_lr is not finite or prox is negative or not finite";
    if (u16_at(h + 40) != 1) return "loss is not 1 (cross-entropy over one-hot classes)";
    if (u16_at(h + 42) != 1) return "activation is not 1 (ReLU)";
    if (r->st_samples < 1 || r->st_samples > MAX_SELFTEST || r->st_pilots < 1 || r->st_pilots > MAX_SELFTEST)
        return "self-test sizes outside 1..256";
    if (!isfinite(r->atol) || r->atol <= 0) return "self-test tolerance is not a positive number";
    if (u32_at(h + 52) != 0 || u32_at(h + 72) != 0 || u32_at(h + 76) != 0) return "reserved header bytes are not zero";
    r->width[0] = (uint16_t)(r->features + r->context);
    for (int i = 0; i < MAX_LAYERS; i++) {
        uint16_t w = u16_at(h + 56 + 2 * i);
        if (i < r->layers && (w < 1 || w > MAX_WIDTH)) return "a layer width outside 1..256";
        if (i >= r->layers && w != 0) return "a width beyond the last layer is not zero";
        if (i < r->layers) r->width[i + 1] = w;
    }
    if (r->width[r->layers] != r->classes) return "the last layer's width differs from classes";
    return 0;
}

/* Point the tensors and the self-test block into the image; the sizes must add up to its length exactly. */
static const char *lay_out_image(receiver_t *r, const uint8_t *image, uint32_t length) {
    uint32_t offset = HEADER_BYTES, tensors = 2u * r->layers + (r->context ? 1u : 0u);
    for (uint32_t t = 0; t < tensors; t++)
        r->count[t] = t == 2u * r->layers ? r->context : t % 2 ? r->width[t / 2 + 1] : (uint32_t)r->width[t / 2] * r->width[t / 2 + 1];
    for (uint32_t t = 0; t < tensors; t++) {
        r->theta[t] = (const float *)(image + offset);
        offset += 4 * r->count[t];
    }
    for (uint32_t t = 0; t < tensors; t++) {
        r->rate[t] = 0;
        if ((r->flags & 1u) && (r->adapts >> t & 1u)) {
            r->rate[t] = (const float *)(image + offset);
            offset += 4 * r->count[t];
        }
    }
    uint32_t st = (uint32_t)r->st_samples * r->features * 4, sm = (uint32_t)r->st_samples * r->classes * 4;
    uint32_t sp = (uint32_t)r->st_pilots * r->features * 4, sl = ((uint32_t)r->st_pilots * 2 + 3) & ~3u;
    if (offset + st + 2 * sm + sp + sl + TRAILER_BYTES != length) return "image length disagrees with the sizes its header gives";
    r->st_x = (const float *)(image + offset), offset += st;
    r->st_theta = (const float *)(image + offset), offset += sm;
    r->st_pilots_x = (const float *)(image + offset), offset += sp;
    r->st_labels = image + offset, offset += sl;
    r->st_adapted = (const float *)(image + offset);
    for (uint32_t t = 0; t < tensors; t++)
        if (!all_finite(r->theta[t], r->count[t]) || (r->rate[t] && !all_finite(r->rate[t], r->count[t])))
            return "a parameter or step size is not finite";
    for (uint32_t q = 0; q < r->st_pilots; q++)
        if (u16_at(r->st_labels + 2 * q) >= r->classes) return "a self-test pilot label is not below classes";
    if (r->st_pilots % 2 && u16_at(r->st_labels + 2 * r->st_pilots)) return "the self-test labels' padding is not zero";
    return 0;
}

static uint32_t even(uint32_t n) { return (n + 1u) & ~1u; }

/* The q15 buffers after the float ones, when they fit; q_bytes stays 0 otherwise. */
static void lay_out_q15(receiver_t *r, uint8_t *work, uint32_t used, uint32_t work_bytes) {
    uint32_t need = 0, widest = 0;
    for (uint32_t i = 0; i < r->layers; i++) {
        need += 2 * even(r->width[i]) * r->width[i + 1] + 4 * r->width[i + 1];
        widest = even(r->width[i]) > widest ? even(r->width[i]) : widest;
    }
    need += 2 * widest;
    r->q_bytes = 0;
    if (used + need > work_bytes) return;
    for (uint32_t i = 0; i < r->layers; i++) {
        r->q_weight[i] = (int16_t *)(work + used), used += 2 * even(r->width[i]) * r->width[i + 1];
        r->q_scale[i] = (float *)(work + used), used += 4 * r->width[i + 1];
    }
    r->q_input = (int16_t *)(work + used);
    r->q_bytes = need;
}

/* φ and its gradient for the adapted tensors, then the activations and two delta rows, in the work area. */
static const char *lay_out_work(receiver_t *r, uint8_t *work, uint32_t work_bytes) {
    uint32_t used = 0, tensors = 2u * r->layers + (r->context ? 1u : 0u), widths = 0, widest = 0;
    for (uint32_t t = 0; t < tensors; t++) {
        r->phi[t] = r->grad[t] = 0;
        if (!(r->adapts >> t & 1u)) continue;
        if (used + 8u * r->count[t] > work_bytes) return "the adapted parameters do not fit in RAM";
        r->phi[t] = (float *)(work + used), used += 4 * r->count[t];
        r->grad[t] = (float *)(work + used), used += 4 * r->count[t];
    }
    for (uint32_t i = 0; i <= r->layers; i++) widths += r->width[i], widest = r->width[i] > widest ? r->width[i] : widest;
    if (used + 4 * (widths + 2 * widest) > work_bytes) return "the activations do not fit in RAM";
    r->act = (float *)(work + used), used += 4 * widths;
    r->delta[0] = (float *)(work + used), used += 4 * widest;
    r->delta[1] = (float *)(work + used), used += 4 * widest;
    lay_out_q15(r, work, used, work_bytes);
    r->work_bytes = used + r->q_bytes;
    return 0;
}

const char *receiver_open(receiver_t *r, const uint8_t *image, uint32_t length, uint8_t *work, uint32_t work_bytes) {
    const char *error = read_header(r, image, length);
    if (!error) {
        sha256_t h;
        uint8_t digest[32];
        sha256_init(&h);
        sha256_update(&h, image, length - TRAILER_BYTES);
        sha256_final(&h, digest);
        if (memcmp(digest, image + length - TRAILER_BYTES, 32) != 0) error = "image SHA-256 does not match its trailer";
    }
    if (!error) error = lay_out_image(r, image, length);
    if (!error) error = lay_out_work(r, work, work_bytes);
    if (!error) receiver_reset(r);
    return error;
}

void receiver_reset(receiver_t *r) {
    for (uint32_t t = 0; t < MAX_TENSORS; t++) r->current[t] = r->theta[t];
}

/* out = in·W + b for W [n_in, n_out] row-major: four outputs at a time, their sums held in registers. */
static void affine(const float *in, const float *w, const float *b, float *out, uint32_t n_in, uint32_t n_out) {
    uint32_t j = 0;
    for (; j + 4 <= n_out; j += 4) {
        float s0 = b[j], s1 = b[j + 1], s2 = b[j + 2], s3 = b[j + 3];
        const float *col = w + j;
        for (uint32_t k = 0; k < n_in; k++, col += n_out) {
            float v = in[k];
            s0 += v * col[0], s1 += v * col[1], s2 += v * col[2], s3 += v * col[3];
        }
        out[j] = s0, out[j + 1] = s1, out[j + 2] = s2, out[j + 3] = s3;
    }
    for (; j < n_out; j++) {
        float s = b[j];
        for (uint32_t k = 0; k < n_in; k++) s += in[k] * w[k * n_out + j];
        out[j] = s;
    }
}

/* z − max z − ln Σ exp(z − max z), in place over the classes' logits. */
static const float *log_softmax(const receiver_t *r, float *z) {
    float top = z[0], sum = 0.0f;
    for (uint32_t c = 1; c < r->classes; c++) top = z[c] > top ? z[c] : top;
    for (uint32_t c = 0; c < r->classes; c++) z[c] -= top, sum += exp_f(z[c]);
    float log_sum = log_f(sum);
    for (uint32_t c = 0; c < r->classes; c++) z[c] -= log_sum;
    return z;
}

typedef void (*layer_fn)(receiver_t *r, uint32_t i, const float *in, float *out); /* out = in·W_i + b_i */

/* Layer outputs by `layer`, ReLU between layers, log-softmax at the end; activations stay in r->act. */
static const float *run_layers(receiver_t *r, const uint8_t *x, layer_fn layer) {
    float *in = r->act;
    memcpy(in, x, 4u * r->features);
    if (r->context) memcpy(in + r->features, r->current[2 * r->layers], 4u * r->context);
    for (uint32_t i = 0; i < r->layers; i++) {
        float *out = in + r->width[i];
        layer(r, i, in, out);
        if (i + 1 < r->layers)
            for (uint32_t j = 0; j < r->width[i + 1]; j++) out[j] = out[j] > 0.0f ? out[j] : 0.0f;
        in = out;
    }
    return log_softmax(r, in);
}

static void affine_float(receiver_t *r, uint32_t i, const float *in, float *out) {
    affine(in, r->current[2 * i], r->current[2 * i + 1], out, r->width[i], r->width[i + 1]);
}

static const float *forward(receiver_t *r, const uint8_t *x) { return run_layers(r, x, affine_float); }

const float *receiver_log_probs(receiver_t *r, const uint8_t *x) { return forward(r, x); }

int receiver_has_q15(const receiver_t *r) { return r->q_bytes != 0; }

/* Round to nearest within ±32767; a value that is not finite (a scale that underflowed) becomes 0. */
static int16_t q15(float v) {
    if (!(v > -32767.0f)) return v != v ? 0 : -32767;
    if (v > 32767.0f) return 32767;
    return (int16_t)(v >= 0.0f ? v + 0.5f : v - 0.5f);
}

void receiver_quantize(receiver_t *r) {
    for (uint32_t i = 0; i < r->layers; i++) {
        uint32_t n_in = r->width[i], n_out = r->width[i + 1], stride = even(n_in);
        const float *w = r->current[2 * i];
        for (uint32_t j = 0; j < n_out; j++) {
            float top = 0.0f;
            for (uint32_t k = 0; k < n_in; k++) top = fabsf(w[k * n_out + j]) > top ? fabsf(w[k * n_out + j]) : top;
            float scale = top > 0.0f ? top / 32767.0f : 1.0f, inverse = 1.0f / scale;
            int16_t *row = r->q_weight[i] + j * stride;
            for (uint32_t k = 0; k < n_in; k++) row[k] = q15(w[k * n_out + j] * inverse);
            if (stride != n_in) row[n_in] = 0;
            r->q_scale[i][j] = scale;
        }
    }
}

/* An accumulator as a float without the C library's 64-bit conversion: its high bits and its low 16 apart (exact
 * in the high part for |acc| < 2^47; SMLALD sums stay below 2^39 here). */
static float acc_to_float(int64_t acc) { return (float)(int32_t)(acc >> 16) * 65536.0f + (float)(uint32_t)(acc & 0xFFFF); }

/* out = in·W + b with the q15 weights of layer i: the input quantised with its own scale, two products per SMLALD,
 * two outputs per pass over the input. */
static void affine_q15(receiver_t *r, uint32_t i, const float *in, float *out) {
    uint32_t n_in = r->width[i], n_out = r->width[i + 1], pairs = even(n_in) / 2;
    float top = 0.0f;
    for (uint32_t k = 0; k < n_in; k++) top = fabsf(in[k]) > top ? fabsf(in[k]) : top;
    float scale = top > 0.0f ? top / 32767.0f : 1.0f, inverse = 1.0f / scale;
    for (uint32_t k = 0; k < n_in; k++) r->q_input[k] = q15(in[k] * inverse);
    if (n_in % 2) r->q_input[n_in] = 0; /* the pad of an odd count */
    const int16x2_t *x = (const int16x2_t *)r->q_input;
    const float *b = r->current[2 * i + 1], *output_scale = r->q_scale[i];
    uint32_t j = 0;
    for (; j + 2 <= n_out; j += 2) {
        const int16x2_t *w0 = (const int16x2_t *)(r->q_weight[i] + j * 2 * pairs), *w1 = w0 + pairs;
        int64_t acc0 = 0, acc1 = 0;
        for (uint32_t k = 0; k < pairs; k++) {
            int16x2_t v = x[k];
            acc0 = __smlald(v, w0[k], acc0);
            acc1 = __smlald(v, w1[k], acc1);
        }
        out[j] = acc_to_float(acc0) * scale * output_scale[j] + b[j];
        out[j + 1] = acc_to_float(acc1) * scale * output_scale[j + 1] + b[j + 1];
    }
    if (j < n_out) {
        const int16x2_t *w0 = (const int16x2_t *)(r->q_weight[i] + j * 2 * pairs);
        int64_t acc0 = 0;
        for (uint32_t k = 0; k < pairs; k++) acc0 = __smlald(x[k], w0[k], acc0);
        out[j] = acc_to_float(acc0) * scale * output_scale[j] + b[j];
    }
}

const float *receiver_log_probs_q15(receiver_t *r, const uint8_t *x) { return run_layers(r, x, affine_q15); }

uint32_t receiver_decide(const receiver_t *r, const float *log_probs, float *confidence) {
    uint32_t best = 0;
    for (uint32_t c = 1; c < r->classes; c++)
        if (log_probs[c] > log_probs[best]) best = c;
    *confidence = exp_f(log_probs[best]);
    return best;
}

/* Add one sample's gradient of −log p(label)/P to r->grad of the adapted tensors (forward just ran on it). */
static void backward(receiver_t *r, const float *log_probs, uint32_t label, float scale) {
    float *d = r->delta[0], *next = r->delta[1];
    for (uint32_t c = 0; c < r->classes; c++) d[c] = scale * (exp_f(log_probs[c]) - (c == label ? 1.0f : 0.0f));
    uint32_t offset = 0;
    for (uint32_t i = 0; i < r->layers; i++) offset += r->width[i];
    int context_adapts = r->context && (r->adapts >> (2 * r->layers) & 1u);
    int lowest = 0; /* no gradient is needed below the lowest layer with an adapted tensor (or the inputs, for a context) */
    while (!context_adapts && !(r->adapts >> (2 * lowest) & 3u)) lowest++;
    for (int i = (int)r->layers - 1; i >= lowest; i--) {
        uint32_t n_in = r->width[i], n_out = r->width[i + 1];
        offset -= n_in;
        const float *in = r->act + offset, *w = r->current[2 * i];
        float *gw = r->grad[2 * i], *gb = r->grad[2 * i + 1];
        if (gw)
            for (uint32_t k = 0; k < n_in; k++)
                for (uint32_t j = 0; j < n_out; j++) gw[k * n_out + j] += in[k] * d[j];
        if (gb)
            for (uint32_t j = 0; j < n_out; j++) gb[j] += d[j];
        if (i == lowest && !context_adapts) break;
        for (uint32_t k = 0; k < n_in; k++) {
            float s = 0.0f;
            for (uint32_t j = 0; j < n_out; j++) s += w[k * n_out + j] * d[j];
            next[k] = i > 0 && in[k] <= 0.0f ? 0.0f : s; /* ReLU passes the gradient where its output was positive */
        }
        float *swap = d;
        d = next, next = swap;
    }
    if (context_adapts)
        for (uint32_t c = 0; c < r->context; c++) r->grad[2 * r->layers][c] += d[r->features + c];
}

static float pilot_loss(receiver_t *r, const uint8_t *x, const uint8_t *labels, uint32_t pilots, int accumulate) {
    float loss = 0.0f;
    for (uint32_t p = 0; p < pilots; p++) {
        uint32_t label = u16_at(labels + 2 * p);
        const float *lp = forward(r, x + 4u * r->features * p);
        loss -= lp[label];
        if (accumulate) backward(r, lp, label, 1.0f / (float)pilots);
    }
    return loss / (float)pilots;
}

adapt_result_t receiver_adapt(receiver_t *r, const uint8_t *x, const uint8_t *labels, uint32_t pilots) {
    adapt_result_t result;
    uint32_t tensors = 2u * r->layers + (r->context ? 1u : 0u);
    for (uint32_t t = 0; t < tensors; t++)
        if (r->phi[t]) memcpy(r->phi[t], r->theta[t], 4u * r->count[t]), r->current[t] = r->phi[t];
    for (uint32_t k = 0; k < r->steps; k++) {
        for (uint32_t t = 0; t < tensors; t++)
            if (r->grad[t]) memset(r->grad[t], 0, 4u * r->count[t]);
        float loss = pilot_loss(r, x, labels, pilots, 1);
        if (k == 0) result.loss_before = loss;
        for (uint32_t t = 0; t < tensors; t++) {
            float *phi = r->phi[t];
            if (!phi) continue;
            const float *g = r->grad[t], *theta = r->theta[t], *rate = r->rate[t];
            for (uint32_t e = 0; e < r->count[t]; e++) {
                float step = g[e] + r->prox * (phi[e] - theta[e]);
                phi[e] -= (rate ? rate[e] : r->lr) * step;
            }
        }
    }
    result.loss_after = pilot_loss(r, x, labels, pilots, 0);
    return result;
}

static float worst_error(receiver_t *r, const float *expected, float worst) {
    for (uint32_t s = 0; s < r->st_samples; s++) {
        const float *lp = forward(r, (const uint8_t *)(r->st_x + s * r->features));
        for (uint32_t c = 0; c < r->classes; c++) {
            float e = fabsf(lp[c] - expected[s * r->classes + c]);
            worst = !(e <= worst) ? e : worst; /* a NaN is the worst error */
        }
    }
    return worst;
}

float receiver_selftest(receiver_t *r) {
    receiver_reset(r);
    float worst = worst_error(r, r->st_theta, 0.0f);
    receiver_adapt(r, (const uint8_t *)r->st_pilots_x, r->st_labels, r->st_pilots);
    worst = worst_error(r, r->st_adapted, worst);
    receiver_reset(r);
    return worst;
}
