/*
 * pcg_proto: the stethoscope link protocol (firmware_bridge/PROTOCOL.md), firmware side.
 *
 * C99, no malloc, no global state: the caller owns every buffer and state struct. Drop
 * pcg_proto.h and pcg_proto.c into the MCU project.
 *
 * Sending (device -> host): keep one pcg_encoder_t; each pcg_encode_* call writes one complete
 * wire frame (COBS-encoded, 0x00-terminated) into `out` and returns its length, or 0 when `out`
 * is too small or an argument is out of range (then nothing is consumed: seq is unchanged).
 * PCG_WIRE_SIZE(payload_bytes) is the buffer size that always suffices; PCG_MAX_WIRE fits any frame.
 *
 *     static pcg_encoder_t enc;              pcg_encoder_init(&enc);
 *     static uint8_t frame[PCG_WIRE_SIZE(2 * 64)];
 *     size_t n = pcg_encode_audio(&enc, first_index, samples, 64, frame, sizeof frame);
 *     uart_write(frame, n);
 *
 * Receiving (host -> device): feed every received byte to pcg_decoder_feed (from the UART ISR
 * or a polling loop); it returns PCG_RX_COMMAND when a START, STOP or SET_SITE frame has been
 * checked (CRC, version, length) and stored in *cmd; PCG_RX_BAD_COMMAND for a valid frame the
 * device cannot act on (answer with ERROR PCG_ERR_BAD_COMMAND); PCG_RX_NONE otherwise. Damaged
 * frames are dropped and counted; the decoder resynchronizes on the next 0x00.
 */
#ifndef PCG_PROTO_H
#define PCG_PROTO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PCG_PROTO_MAJOR 1u
#define PCG_PROTO_MINOR 0u
#define PCG_PROTO_VERSION ((PCG_PROTO_MAJOR << 4) | PCG_PROTO_MINOR)

#define PCG_HEADER_SIZE 10u
#define PCG_CRC_SIZE 2u
#define PCG_MAX_PAYLOAD 512u
#define PCG_MAX_SAMPLES (PCG_MAX_PAYLOAD / 2u)
#define PCG_MAX_FRAME (PCG_HEADER_SIZE + PCG_MAX_PAYLOAD + PCG_CRC_SIZE)
/* Wire bytes of a frame with `payload` bytes: COBS adds one code per 254 bytes, plus the 0x00. */
#define PCG_WIRE_SIZE(payload) \
    ((PCG_HEADER_SIZE + (payload) + PCG_CRC_SIZE) + (PCG_HEADER_SIZE + (payload) + PCG_CRC_SIZE) / 254u + 2u)
#define PCG_MAX_WIRE PCG_WIRE_SIZE(PCG_MAX_PAYLOAD)

/* Host commands are short; the receive buffer holds this many decoded bytes. */
#define PCG_RX_MAX_FRAME 64u

enum pcg_msg_type {
    PCG_MSG_DEVICE_INFO = 0x01,
    PCG_MSG_AUDIO = 0x02,
    PCG_MSG_SITE_EVENT = 0x03,
    PCG_MSG_STATUS = 0x04,
    PCG_MSG_ERROR = 0x05,
    PCG_CMD_START = 0x81,
    PCG_CMD_STOP = 0x82,
    PCG_CMD_SET_SITE = 0x83
};

/* Site codes: the patient tensor's order (AV, PV, TV, MV, other). */
enum pcg_site { PCG_SITE_AV = 0, PCG_SITE_PV = 1, PCG_SITE_TV = 2, PCG_SITE_MV = 3, PCG_SITE_OTHER = 4 };

enum pcg_site_source { PCG_SITE_FROM_HOST = 0, PCG_SITE_FROM_BUTTON = 1 };

enum pcg_status_flags { PCG_STATUS_CHARGING = 0x01, PCG_STATUS_STREAMING = 0x02, PCG_STATUS_CLIPPING = 0x04 };

enum pcg_error_code { PCG_ERR_ADC_OVERRUN = 1, PCG_ERR_BAD_COMMAND = 2, PCG_ERR_UNSUPPORTED = 3 };

/* CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor. Chain calls by
 * passing the previous result as `crc`; start with 0xFFFF. */
uint16_t pcg_crc16(const uint8_t *data, size_t len, uint16_t crc);

typedef struct {
    uint16_t seq; /* number of the next frame sent */
} pcg_encoder_t;

typedef struct {
    uint8_t fw_major;
    uint8_t fw_minor;
    uint8_t fw_patch;
    uint32_t rate_hz;
    uint8_t sample_bits;
    uint8_t channels;
} pcg_device_info_t;

void pcg_encoder_init(pcg_encoder_t *enc);

/* `sample_index`: the device's sample clock (index of the next sample it will produce). */
size_t pcg_encode_device_info(pcg_encoder_t *enc, const pcg_device_info_t *info, uint32_t sample_index,
                              uint8_t *out, size_t out_size);
/* `count` samples (1..PCG_MAX_SAMPLES) whose first has stream index `first_index`. */
size_t pcg_encode_audio(pcg_encoder_t *enc, uint32_t first_index, const int16_t *samples, uint16_t count,
                        uint8_t *out, size_t out_size);
size_t pcg_encode_site_event(pcg_encoder_t *enc, uint8_t site, uint8_t source, uint32_t sample_index,
                             uint8_t *out, size_t out_size);
size_t pcg_encode_status(pcg_encoder_t *enc, uint16_t battery_mv, uint8_t battery_pct, uint8_t flags,
                         uint32_t sample_index, uint8_t *out, size_t out_size);
/* `text`: NUL-terminated ASCII, at most 255 bytes are sent; NULL sends no text. */
size_t pcg_encode_error(pcg_encoder_t *enc, uint8_t code, const char *text, uint32_t sample_index,
                        uint8_t *out, size_t out_size);

typedef struct {
    uint8_t type; /* PCG_CMD_START, PCG_CMD_STOP or PCG_CMD_SET_SITE */
    uint16_t seq;
    uint8_t site; /* SET_SITE only */
} pcg_command_t;

typedef struct {
    uint32_t frames_ok;
    uint32_t crc_errors;
    uint32_t length_errors; /* too short, truncated COBS block, or payload too short for the type */
    uint32_t oversize;      /* longer than PCG_RX_MAX_FRAME */
    uint32_t version_errors;
    uint32_t bad_commands; /* valid frames with an unknown type or an out-of-range site */
} pcg_rx_stats_t;

typedef struct {
    uint8_t buf[PCG_RX_MAX_FRAME];
    uint16_t len;
    uint8_t code;      /* code byte of the current COBS block; 0 before the first */
    uint8_t remaining; /* data bytes still to come in the current block */
    uint8_t overflow;
    pcg_rx_stats_t stats;
} pcg_decoder_t;

typedef enum { PCG_RX_NONE = 0, PCG_RX_COMMAND = 1, PCG_RX_BAD_COMMAND = 2 } pcg_rx_result_t;

void pcg_decoder_init(pcg_decoder_t *dec);
pcg_rx_result_t pcg_decoder_feed(pcg_decoder_t *dec, uint8_t byte, pcg_command_t *cmd);

#ifdef __cplusplus
}
#endif

#endif /* PCG_PROTO_H */
