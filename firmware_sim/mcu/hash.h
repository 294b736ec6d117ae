/* CRC-32 (ISO-HDLC, zlib's crc32) for the serial framing and SHA-256 (FIPS 180-4) for the receiver image. */
#ifndef METAEDGE_HASH_H
#define METAEDGE_HASH_H

#include <stddef.h>
#include <stdint.h>

uint32_t crc32_update(uint32_t crc, const uint8_t *data, size_t n); /* start with 0; zlib's running value */

typedef struct {
    uint32_t state[8];
    uint64_t bytes;
    uint8_t block[64];
} sha256_t;

void sha256_init(sha256_t *h);
void sha256_update(sha256_t *h, const uint8_t *data, size_t n);
void sha256_final(sha256_t *h, uint8_t digest[32]);

#endif
