/* The frame loop: messages over UART0 (docs/device-protocol.md §6, the serial profile), one at a time.
 *
 * Every message is `u32 length | payload | u32 CRC-32(payload)`, as on the device protocol's byte stream. A request's
 * payload is `u8 op | u8 flags | u16 0 | u32 seq | body`, a response's `u8 op | u8 status | u16 0 | u32 seq | body`;
 * statuses 1 (refused) and 2 (the message did not arrive whole: resend it) carry one sentence saying what was wrong.
 * Bad input costs an error response, never the image. */
#include <math.h>
#include <string.h>

#include "board.h"
#include "hash.h"
#include "receiver.h"

#define PROTOCOL 1
#define MAX_PAYLOAD 4096
#define BYTE_TIMEOUT (SYSCLK_HZ / 50) /* 20 ms: a message whose next byte takes longer has ended */
enum { OP_INFO = 1, OP_LOAD = 2, OP_ADAPT = 3, OP_DECIDE = 4, OP_SELFTEST = 5 };
enum { STATE_EMPTY = 0, STATE_READY = 1, STATE_FAILED = 2, STATE_LOADING = 3 };
enum { DECIDE_LOG_PROBS = 1, DECIDE_AT_THETA = 2, DECIDE_Q15 = 4 };
enum { STATUS_OK = 0, STATUS_REFUSED = 1, STATUS_RESEND = 2 };

extern uint8_t __image_start[], __image_end[], __work_start[], __work_end[];
extern uint32_t __data_start, __bss_end;

static uint8_t message[MAX_PAYLOAD + 4] __attribute__((aligned(8)));
static receiver_t receiver;
static uint32_t state = STATE_EMPTY, received, expected;
static float selftest_error = NAN;
static uint64_t selftest_ticks;

/* -- responses: the length first, then the payload streamed with its running CRC -------------------------------- */
static uint32_t reply_crc;

static void put_raw(const void *data, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) uart_put(((const uint8_t *)data)[i]);
}
static void put(const void *data, uint32_t n) {
    reply_crc = crc32_update(reply_crc, data, n);
    put_raw(data, n);
}
static void put_u32(uint32_t v) { put(&v, 4); }
static void put_f32(float v) { put(&v, 4); }
static void put_u64(uint64_t v) { put(&v, 8); }

static void begin_reply(uint8_t op, uint8_t status, uint32_t seq, uint32_t body) {
    uint32_t length = 8 + body;
    uint8_t head[4] = {op, status, 0, 0};
    put_raw(&length, 4);
    reply_crc = 0;
    put(head, 4);
    put_u32(seq);
}
static void end_reply(void) { put_raw(&reply_crc, 4); }

static void reply_status(uint8_t op, uint8_t status, uint32_t seq, const char *sentence) {
    uint32_t n = (uint32_t)strlen(sentence);
    begin_reply(op, status, seq, n);
    put(sentence, n);
    end_reply();
}
static void reply_error(uint8_t op, uint32_t seq, const char *sentence) { reply_status(op, STATUS_REFUSED, seq, sentence); }
static void reply_resend(const char *sentence) { reply_status(0, STATUS_RESEND, 0, sentence); }

/* -- requests ------------------------------------------------------------------------------------------------------ */
static uint16_t u16_at(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t u32_at(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

static int finite_samples(const uint8_t *x, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        float v;
        memcpy(&v, x + 4 * i, 4);
        if (!isfinite(v)) return 0;
    }
    return 1;
}

static void info(uint32_t seq) {
    uint8_t digest[32] = {0};
    if (state == STATE_READY || state == STATE_FAILED) memcpy(digest, __image_start + expected - 32, 32);
    begin_reply(OP_INFO, 0, seq, 13 * 4 + 32);
    put_u32(PROTOCOL);
    put_u32(SYSCLK_HZ);
    put_u32(MAX_PAYLOAD);
    put_u32((uint32_t)(__image_end - __image_start));
    put_u32(state);
    put_u32(state == STATE_READY || state == STATE_FAILED ? expected : 0);
    put_u32((uint32_t)((uint8_t *)&__bss_end - (uint8_t *)&__data_start)); /* .data + .bss */
    put_u32((uint32_t)(__work_end - __work_start));
    put_u32(state == STATE_READY || state == STATE_FAILED ? receiver.work_bytes : 0);
    put_u32(stack_size());
    put_u32(stack_high_water());
    put_u32((uint32_t)__image_start); /* flash the firmware occupies: everything below the image slot */
    put_f32(selftest_error);
    put(digest, 32);
    end_reply();
}

static void reply_selftest(uint8_t op, uint32_t seq) {
    begin_reply(op, 0, seq, 5 * 4 + 8);
    put_u32(1);
    put_u32(received);
    put_f32(selftest_error);
    put_f32(receiver.atol);
    put_u32(receiver.work_bytes);
    put_u64(selftest_ticks);
    end_reply();
}

static void run_selftest(uint8_t op, uint32_t seq) {
    const char *error = receiver_open(&receiver, __image_start, expected, __work_start, (uint32_t)(__work_end - __work_start));
    if (error) {
        state = STATE_EMPTY;
        reply_error(op, seq, error);
        return;
    }
    uint64_t start = clock_ticks();
    selftest_error = receiver_selftest(&receiver);
    selftest_ticks = clock_ticks() - start;
    state = selftest_error <= receiver.atol ? STATE_READY : STATE_FAILED;
    reply_selftest(op, seq);
}

/* LOAD: u32 offset | u32 total | chunk. Offset 0 starts an image; the last chunk verifies it and runs its self-test. */
static void load(uint32_t seq, const uint8_t *body, uint32_t n) {
    if (n < 8) return reply_error(OP_LOAD, seq, "load needs an offset, a total length and a chunk");
    uint32_t offset = u32_at(body), total = u32_at(body + 4), chunk = n - 8;
    uint32_t capacity = (uint32_t)(__image_end - __image_start);
    if (offset == 0) {
        if (total < HEADER_BYTES + TRAILER_BYTES || total > capacity || total % 4)
            return reply_error(OP_LOAD, seq, "image length must be a multiple of 4 between 112 bytes and the slot's capacity");
        if (chunk > total) return reply_error(OP_LOAD, seq, "chunk runs past the image's total length");
        state = STATE_LOADING, received = 0, expected = total, selftest_error = NAN; /* the running image ends here */
    } else if (state != STATE_LOADING || offset != received || total != expected) {
        return reply_error(OP_LOAD, seq, "chunk does not continue the image being loaded; start again at offset 0");
    } else if (chunk > expected - received) {
        return reply_error(OP_LOAD, seq, "chunk runs past the image's total length");
    }
    memcpy(__image_start + received, body + 8, chunk);
    received += chunk;
    if (received < expected) {
        begin_reply(OP_LOAD, 0, seq, 8);
        put_u32(0);
        put_u32(received);
        end_reply();
        return;
    }
    run_selftest(OP_LOAD, seq);
}

/* ADAPT: u16 P | u16 0 | P×F float32 pilots | P u16 labels (padded to 4 bytes). Starts from θ every time. */
static void adapt(uint32_t seq, const uint8_t *body, uint32_t n) {
    if (state != STATE_READY) return reply_error(OP_ADAPT, seq, "no receiver image has passed its self-test");
    uint32_t pilots = n >= 4 ? u16_at(body) : 0, features = receiver.features;
    if (pilots == 0 || n != 4 + pilots * features * 4 + ((pilots * 2 + 3) & ~3u))
        return reply_error(OP_ADAPT, seq, "adapt needs P >= 1 pilots of F float32 features and P u16 labels, padded to 4 bytes");
    const uint8_t *x = body + 4, *labels = x + pilots * features * 4;
    if (u16_at(body + 2) || (pilots % 2 && u16_at(labels + 2 * pilots)))
        return reply_error(OP_ADAPT, seq, "reserved or padding bytes of adapt are not zero");
    if (!finite_samples(x, pilots * features)) return reply_error(OP_ADAPT, seq, "a pilot sample is not finite");
    for (uint32_t p = 0; p < pilots; p++)
        if (u16_at(labels + 2 * p) >= receiver.classes) return reply_error(OP_ADAPT, seq, "a pilot label is not below the image's classes");
    uint64_t start = clock_ticks();
    adapt_result_t result = receiver_adapt(&receiver, x, labels, pilots);
    uint64_t ticks = clock_ticks() - start;
    begin_reply(OP_ADAPT, 0, seq, 4 * 4 + 8);
    put_f32(result.loss_before);
    put_f32(result.loss_after);
    put_u32(receiver.steps);
    put_u32(pilots);
    put_u64(ticks);
    end_reply();
}

/* DECIDE: u16 N | u16 0 | N×F float32 samples. Per sample: u32 decision | f32 confidence [| M f32 log-probs];
 * then u64 ticks spent computing (the UART excluded). Flags: log-probabilities, at θ, the q15 forward. */
static void decide(uint32_t seq, uint8_t flags, const uint8_t *body, uint32_t n) {
    if (state != STATE_READY) return reply_error(OP_DECIDE, seq, "no receiver image has passed its self-test");
    if (flags & ~7u) return reply_error(OP_DECIDE, seq, "unknown decide flags");
    if ((flags & DECIDE_Q15) && !receiver_has_q15(&receiver)) return reply_error(OP_DECIDE, seq, "the q15 forward does not fit this receiver in RAM");
    uint32_t count = n >= 4 ? u16_at(body) : 0, features = receiver.features, classes = receiver.classes;
    if (count == 0 || n != 4 + count * features * 4) return reply_error(OP_DECIDE, seq, "decide needs N >= 1 samples of F float32 features");
    if (u16_at(body + 2)) return reply_error(OP_DECIDE, seq, "reserved bytes of decide are not zero");
    const uint8_t *x = body + 4;
    if (!finite_samples(x, count * features)) return reply_error(OP_DECIDE, seq, "a sample is not finite");
    const float *saved[MAX_TENSORS];
    memcpy(saved, receiver.current, sizeof saved);
    if (flags & DECIDE_AT_THETA) receiver_reset(&receiver);
    uint32_t record = 8 + ((flags & DECIDE_LOG_PROBS) ? 4 * classes : 0);
    begin_reply(OP_DECIDE, 0, seq, count * record + 8);
    uint64_t ticks = 0;
    if (flags & DECIDE_Q15) {
        uint64_t start = clock_ticks();
        receiver_quantize(&receiver);
        ticks += clock_ticks() - start;
    }
    for (uint32_t s = 0; s < count; s++) {
        uint64_t start = clock_ticks();
        const uint8_t *sample = x + s * features * 4;
        const float *lp = flags & DECIDE_Q15 ? receiver_log_probs_q15(&receiver, sample) : receiver_log_probs(&receiver, sample);
        float confidence;
        uint32_t best = receiver_decide(&receiver, lp, &confidence);
        ticks += clock_ticks() - start;
        put_u32(best);
        put_f32(confidence);
        if (flags & DECIDE_LOG_PROBS) put(lp, 4 * classes);
    }
    put_u64(ticks);
    end_reply();
    memcpy(receiver.current, saved, sizeof saved);
}

static void selftest(uint32_t seq) {
    if (state != STATE_READY && state != STATE_FAILED) return reply_error(OP_SELFTEST, seq, "no receiver image is loaded");
    run_selftest(OP_SELFTEST, seq);
}

/* -- the loop -------------------------------------------------------------------------------------------------------- */
static int read_bytes(uint8_t *dst, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        int byte = uart_get(BYTE_TIMEOUT);
        if (byte < 0) return -1;
        dst[i] = (uint8_t)byte;
    }
    return 0;
}

static void drain(void) {
    while (uart_get(BYTE_TIMEOUT) >= 0) {
    }
}

static void serve_one(void) {
    uint8_t field[4];
    field[0] = (uint8_t)uart_get(0);
    if (read_bytes(field + 1, 3) < 0) return reply_resend("message ended inside its length field");
    uint32_t length = u32_at(field), crc;
    if (length < 8 || length > MAX_PAYLOAD) {
        drain(); /* the next message boundary is lost: skip to the end of what the host sent */
        return reply_error(0, 0, "message length outside 8..4096 bytes");
    }
    if (read_bytes(message, length + 4) < 0) return reply_resend("message ended before its length and CRC");
    crc = u32_at(message + length);
    if (crc32_update(0, message, length) != crc) return reply_resend("CRC mismatch: the message was corrupted in transit");
    uint8_t op = message[0], flags = message[1];
    uint32_t seq = u32_at(message + 4), n = length - 8;
    const uint8_t *body = message + 8;
    if (message[2] || message[3]) return reply_error(op, seq, "reserved request bytes are not zero");
    if (op != OP_DECIDE && flags) return reply_error(op, seq, "this operation takes no flags");
    switch (op) {
    case OP_INFO:
        return n ? reply_error(op, seq, "info takes no body") : info(seq);
    case OP_LOAD:
        return load(seq, body, n);
    case OP_ADAPT:
        return adapt(seq, body, n);
    case OP_DECIDE:
        return decide(seq, flags, body, n);
    case OP_SELFTEST:
        return n ? reply_error(op, seq, "selftest takes no body") : selftest(seq);
    default:
        return reply_error(op, seq, "unknown operation");
    }
}

int main(void) {
    clock_init();
    uart_init();
    for (;;) serve_one();
}
