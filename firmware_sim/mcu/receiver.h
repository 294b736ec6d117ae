/* A receiver image (docs/bundle-format.md §16): its validation, the MLP it describes, and one frame's adaptation. */
#ifndef METAEDGE_RECEIVER_H
#define METAEDGE_RECEIVER_H

#include <stddef.h>
#include <stdint.h>

#define MAX_LAYERS 8
#define MAX_TENSORS (2 * MAX_LAYERS + 1)
#define MAX_WIDTH 256
#define MAX_CONTEXT 64
#define MAX_STEPS 1024
#define MAX_SELFTEST 256
#define HEADER_BYTES 80
#define TRAILER_BYTES 32

typedef struct {
    uint16_t features, classes, layers, context, steps, flags;
    uint32_t adapts; /* bit t: tensor t adapts (2i: W_i, 2i+1: b_i, 2L: context) */
    float lr, prox;
    uint16_t width[MAX_LAYERS + 1]; /* width[0]: inputs (features + context); width[i + 1]: layer i's outputs */
    uint32_t count[MAX_TENSORS];
    const float *theta[MAX_TENSORS]; /* in the image */
    const float *rate[MAX_TENSORS];  /* per-entry step sizes, or 0 */
    float *phi[MAX_TENSORS];         /* the adapted copy (work area), adapted tensors only */
    float *grad[MAX_TENSORS];
    const float *current[MAX_TENSORS]; /* what the forward pass reads: phi for adapted tensors after adaptation, else theta */
    float *act;                        /* every layer's activations of one sample */
    float *delta[2];
    uint32_t work_bytes; /* of the work area this receiver uses */
    /* the q15 forward (optional: 0 when its buffers do not fit): each layer's weights transposed to [out, in] as
     * int16 with one scale per output, the inputs padded to an even count; one layer's input in q15 */
    int16_t *q_weight[MAX_LAYERS];
    float *q_scale[MAX_LAYERS];
    int16_t *q_input;
    uint32_t q_bytes;
    /* self-test block */
    uint16_t st_samples, st_pilots;
    float atol;
    const float *st_x, *st_theta, *st_pilots_x, *st_adapted;
    const uint8_t *st_labels; /* u16 little-endian each */
} receiver_t;

typedef struct {
    float loss_before, loss_after;
} adapt_result_t;

/* Validate `image` (`length` bytes, 4-byte aligned) and lay out the receiver in `work` (`work_bytes` available).
 * Returns 0, or a sentence saying what is wrong. */
const char *receiver_open(receiver_t *r, const uint8_t *image, uint32_t length, uint8_t *work, uint32_t work_bytes);

void receiver_reset(receiver_t *r); /* the forward pass reads θ again */

/* K steps on P pilots (x: [P, F] float32 little-endian, labels: u16 each, checked < classes by the caller). */
adapt_result_t receiver_adapt(receiver_t *r, const uint8_t *x, const uint8_t *labels, uint32_t pilots);

/* Class log-probabilities of one sample (F floats, unaligned bytes allowed) at the current parameters: r->classes
 * values, valid until the next call. */
const float *receiver_log_probs(receiver_t *r, const uint8_t *x);

/* Whether the q15 forward fits this receiver's work area; receiver_quantize and receiver_log_probs_q15 need it. */
int receiver_has_q15(const receiver_t *r);

/* Quantise the current parameters' weights to q15, one scale per output (after every adaptation or reset). */
void receiver_quantize(receiver_t *r);

/* receiver_log_probs with q15 weights and inputs (the input's scale taken per sample and layer), 64-bit dual
 * multiply-accumulates (SMLALD), biases and log-softmax in float. */
const float *receiver_log_probs_q15(receiver_t *r, const uint8_t *x);

/* The decision for one sample's log-probabilities (the largest; the lowest class among ties) and its probability. */
uint32_t receiver_decide(const receiver_t *r, const float *log_probs, float *confidence);

/* Replay the image's self-test; the largest absolute error over both checks. Leaves the receiver at θ. */
float receiver_selftest(receiver_t *r);

#endif
