/*
 * Host unit tests for pcg_proto, run by tests/test_bridge_c.py:
 *
 *     gcc -std=c99 -Wall -Wextra -Werror -pedantic -I firmware_bridge/c -I tests/vectors \
 *         firmware_bridge/c/pcg_proto.c firmware_bridge/c/test_pcg_proto.c -o test_pcg_proto
 *
 * Checks the encoder against the shared vectors (byte for byte), the decoder against the host
 * command vectors (also byte by byte after garbage), and prints every frame it encodes as
 * "frame <name> <hex>" so the Python side can decode them. Exit status 0 when all checks pass.
 */
#include <stdio.h>
#include <string.h>

#include "pcg_proto.h"
#include "pcg_vectors.h"

static int checks;
static int failures;

#define CHECK(cond, name)                                                              \
    do {                                                                               \
        checks++;                                                                      \
        if (!(cond)) {                                                                 \
            failures++;                                                                \
            printf("FAIL %s:%d %s: %s\n", __FILE__, __LINE__, (name), #cond);          \
        }                                                                              \
    } while (0)

static size_t encode_vector(const pcg_vector_t *v, pcg_encoder_t *enc, uint8_t *out, size_t size)
{
    pcg_device_info_t info;
    switch (v->type) {
    case PCG_MSG_DEVICE_INFO:
        info.fw_major = v->fw[0];
        info.fw_minor = v->fw[1];
        info.fw_patch = v->fw[2];
        info.rate_hz = v->rate_hz;
        info.sample_bits = v->sample_bits;
        info.channels = v->channels;
        return pcg_encode_device_info(enc, &info, v->sample_index, out, size);
    case PCG_MSG_AUDIO:
        return pcg_encode_audio(enc, v->sample_index, v->samples, v->count, out, size);
    case PCG_MSG_SITE_EVENT:
        return pcg_encode_site_event(enc, v->site, v->source, v->sample_index, out, size);
    case PCG_MSG_STATUS:
        return pcg_encode_status(enc, v->battery_mv, v->battery_pct, v->flags, v->sample_index, out, size);
    case PCG_MSG_ERROR:
        return pcg_encode_error(enc, v->code, v->text, v->sample_index, out, size);
    default:
        return 0;
    }
}

static void print_frame(const char *name, const uint8_t *data, size_t len)
{
    size_t i;
    printf("frame %s ", name);
    for (i = 0; i < len; i++) {
        printf("%02x", data[i]);
    }
    printf("\n");
}

static void test_crc_check_value(void)
{
    const uint8_t check[] = "123456789";
    CHECK(pcg_crc16(check, 9, 0xFFFFu) == 0x29B1u, "crc check value");
    /* Chaining gives the same result as one call. */
    CHECK(pcg_crc16(check + 4, 5, pcg_crc16(check, 4, 0xFFFFu)) == 0x29B1u, "crc chaining");
}

static void test_encoder_matches_vectors(void)
{
    static uint8_t out[PCG_MAX_WIRE];
    size_t i;
    for (i = 0; i < N_DEVICE_VECTORS; i++) {
        const pcg_vector_t *v = &device_vectors[i];
        pcg_encoder_t enc;
        size_t n;
        pcg_encoder_init(&enc);
        enc.seq = v->seq;
        n = encode_vector(v, &enc, out, sizeof out);
        CHECK(n == v->wire_len, v->name);
        CHECK(n == v->wire_len && memcmp(out, v->wire, n) == 0, v->name);
        CHECK(enc.seq == (uint16_t)(v->seq + 1u), v->name);
        CHECK(n <= PCG_WIRE_SIZE(v->type == PCG_MSG_AUDIO ? 2u * v->count : 64u), v->name);
        print_frame(v->name, out, n);
    }
}

static void test_encoder_refuses_small_buffers_without_consuming_seq(void)
{
    static uint8_t out[PCG_MAX_WIRE];
    size_t i;
    for (i = 0; i < N_DEVICE_VECTORS; i++) {
        const pcg_vector_t *v = &device_vectors[i];
        pcg_encoder_t enc;
        pcg_encoder_init(&enc);
        enc.seq = v->seq;
        /* One byte short must fail; the exact size must succeed. */
        CHECK(encode_vector(v, &enc, out, v->wire_len - 1u) == 0, v->name);
        CHECK(enc.seq == v->seq, v->name);
        CHECK(encode_vector(v, &enc, out, v->wire_len) == v->wire_len, v->name);
    }
}

static void test_encoder_rejects_bad_arguments(void)
{
    static uint8_t out[PCG_MAX_WIRE];
    static int16_t samples[PCG_MAX_SAMPLES + 1];
    pcg_encoder_t enc;
    pcg_encoder_init(&enc);
    CHECK(pcg_encode_audio(&enc, 0, samples, 0, out, sizeof out) == 0, "zero samples");
    CHECK(pcg_encode_audio(&enc, 0, samples, PCG_MAX_SAMPLES + 1u, out, sizeof out) == 0, "too many samples");
    CHECK(pcg_encode_audio(&enc, 0, samples, PCG_MAX_SAMPLES, out, sizeof out) > 0, "max samples");
    CHECK(pcg_encode_site_event(&enc, 5, PCG_SITE_FROM_BUTTON, 0, out, sizeof out) == 0, "unknown site");
    CHECK(enc.seq == 1u, "only the valid frame consumed a sequence number");
}

static int feed_all(pcg_decoder_t *dec, const uint8_t *data, size_t len, pcg_command_t *cmd, int *bad)
{
    size_t i;
    int got = 0;
    for (i = 0; i < len; i++) {
        pcg_rx_result_t r = pcg_decoder_feed(dec, data[i], cmd);
        if (r == PCG_RX_COMMAND) {
            got++;
        } else if (r == PCG_RX_BAD_COMMAND) {
            (*bad)++;
        }
    }
    return got;
}

static void test_decoder_reads_host_vectors(void)
{
    static const uint8_t garbage[] = {0x13, 0x37, 0xff, 0xff, 0x02, 0x10, 0x81};
    size_t i;
    pcg_decoder_t dec;
    pcg_decoder_init(&dec);
    for (i = 0; i < N_HOST_VECTORS; i++) {
        const pcg_vector_t *v = &host_vectors[i];
        pcg_command_t cmd;
        int bad = 0;
        uint8_t delimiter = 0;
        memset(&cmd, 0xEE, sizeof cmd);
        /* Line noise and a resync delimiter before each frame must not matter. */
        CHECK(feed_all(&dec, garbage, sizeof garbage, &cmd, &bad) == 0, v->name);
        CHECK(feed_all(&dec, &delimiter, 1, &cmd, &bad) == 0, v->name);
        CHECK(feed_all(&dec, v->wire, v->wire_len, &cmd, &bad) == 1, v->name);
        CHECK(bad == 0, v->name);
        CHECK(cmd.type == v->type, v->name);
        CHECK(cmd.seq == v->seq, v->name);
        CHECK(v->type != PCG_CMD_SET_SITE || cmd.site == v->site, v->name);
    }
    CHECK(dec.stats.frames_ok == N_HOST_VECTORS, "frames counted");
}

static void test_decoder_rejects_invalid_frames(void)
{
    size_t i;
    for (i = 0; i < N_INVALID_HOST_VECTORS; i++) {
        const pcg_invalid_vector_t *v = &invalid_host_vectors[i];
        pcg_decoder_t dec;
        pcg_command_t cmd;
        int bad = 0;
        pcg_decoder_init(&dec);
        CHECK(feed_all(&dec, v->wire, v->wire_len, &cmd, &bad) == 0, v->name);
        if (strcmp(v->counted_as, "crc") == 0) {
            CHECK(dec.stats.crc_errors == 1u && bad == 0, v->name);
        } else if (strcmp(v->counted_as, "version") == 0) {
            CHECK(dec.stats.version_errors == 1u && bad == 0, v->name);
        } else if (strcmp(v->counted_as, "length") == 0) {
            CHECK(dec.stats.length_errors == 1u && bad == 0, v->name);
        } else {
            CHECK(strcmp(v->counted_as, "bad_command") == 0, v->name);
            CHECK(dec.stats.bad_commands == 1u && bad == 1, v->name);
        }
        /* The decoder is usable right after: a valid START decodes. */
        CHECK(feed_all(&dec, host_vectors[0].wire, host_vectors[0].wire_len, &cmd, &bad) == 1, v->name);
    }
}

static void test_decoder_drops_oversize_frame_and_recovers(void)
{
    uint8_t long_frame[PCG_RX_MAX_FRAME * 2u];
    pcg_decoder_t dec;
    pcg_command_t cmd;
    int bad = 0;
    memset(long_frame, 0x01, sizeof long_frame); /* a valid COBS run of zeros, too long */
    pcg_decoder_init(&dec);
    CHECK(feed_all(&dec, long_frame, sizeof long_frame, &cmd, &bad) == 0, "oversize");
    CHECK(feed_all(&dec, host_vectors[1].wire, host_vectors[1].wire_len, &cmd, &bad) == 0, "oversize swallows next");
    CHECK(dec.stats.oversize == 1u, "oversize counted");
    CHECK(feed_all(&dec, host_vectors[1].wire, host_vectors[1].wire_len, &cmd, &bad) == 1, "recovers");
    CHECK(cmd.type == PCG_CMD_STOP, "recovers");
}

static void test_device_frames_round_trip_through_own_decoder_framing(void)
{
    /* The device's own decoder must reject its outgoing frames as commands (wrong direction),
     * yet parse their framing: they pass CRC and count as bad commands, not as damage. */
    static uint8_t out[PCG_MAX_WIRE];
    pcg_encoder_t enc;
    pcg_decoder_t dec;
    pcg_command_t cmd;
    int bad = 0;
    size_t n;
    pcg_encoder_init(&enc);
    pcg_decoder_init(&dec);
    n = pcg_encode_status(&enc, 3700, 80, PCG_STATUS_STREAMING, 42, out, sizeof out);
    CHECK(feed_all(&dec, out, n, &cmd, &bad) == 0, "status is not a command");
    CHECK(bad == 1 && dec.stats.crc_errors == 0u, "status framing valid");
}

int main(void)
{
    test_crc_check_value();
    test_encoder_matches_vectors();
    test_encoder_refuses_small_buffers_without_consuming_seq();
    test_encoder_rejects_bad_arguments();
    test_decoder_reads_host_vectors();
    test_decoder_rejects_invalid_frames();
    test_decoder_drops_oversize_frame_and_recovers();
    test_device_frames_round_trip_through_own_decoder_framing();
    printf("%s: %d checks, %d failures\n", failures ? "FAILED" : "ok", checks, failures);
    return failures ? 1 : 0;
}
