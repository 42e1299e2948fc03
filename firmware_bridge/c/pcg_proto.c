/* pcg_proto: see pcg_proto.h and PROTOCOL.md. */
#include "pcg_proto.h"

#define PCG_SITE_COUNT 5u

uint16_t pcg_crc16(const uint8_t *data, size_t len, uint16_t crc)
{
    size_t i;
    int bit;
    for (i = 0; i < len; i++) {
        crc ^= (uint16_t)((uint16_t)data[i] << 8);
        for (bit = 0; bit < 8; bit++) {
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
        }
    }
    return crc;
}

/* ---- encoder: COBS-encodes while writing, so no scratch copy of the frame is needed ---- */

typedef struct {
    uint8_t *out;
    size_t size;
    size_t pos;      /* next free byte of out */
    size_t code_pos; /* where the current block's code byte goes */
    uint8_t code;    /* 1 + data bytes in the current block */
    uint8_t after_full_block; /* the current block was opened because the previous one hit 254 bytes */
    uint8_t ok;
    uint16_t crc;
} pcg_writer_t;

static void writer_begin(pcg_writer_t *w, uint8_t *out, size_t size)
{
    w->out = out;
    w->size = size;
    w->code_pos = 0;
    w->pos = 1;
    w->code = 1;
    w->after_full_block = 0;
    w->ok = (uint8_t)(out != NULL && size >= 2u);
    w->crc = 0xFFFFu;
}

static void writer_close_block(pcg_writer_t *w, uint8_t full)
{
    if (!w->ok) {
        return;
    }
    w->out[w->code_pos] = w->code;
    if (w->pos >= w->size) {
        w->ok = 0;
        return;
    }
    w->code_pos = w->pos++;
    w->code = 1;
    w->after_full_block = full;
}

static void writer_put_raw(pcg_writer_t *w, uint8_t byte)
{
    if (!w->ok) {
        return;
    }
    if (byte == 0u) {
        writer_close_block(w, 0);
        return;
    }
    if (w->pos >= w->size) {
        w->ok = 0;
        return;
    }
    w->out[w->pos++] = byte;
    if (++w->code == 0xFFu) {
        writer_close_block(w, 1);
    }
}

static void put_u8(pcg_writer_t *w, uint8_t value)
{
    w->crc = pcg_crc16(&value, 1, w->crc);
    writer_put_raw(w, value);
}

static void put_u16(pcg_writer_t *w, uint16_t value)
{
    put_u8(w, (uint8_t)(value & 0xFFu));
    put_u8(w, (uint8_t)(value >> 8));
}

static void put_u32(pcg_writer_t *w, uint32_t value)
{
    put_u16(w, (uint16_t)(value & 0xFFFFu));
    put_u16(w, (uint16_t)(value >> 16));
}

static void put_header(pcg_writer_t *w, const pcg_encoder_t *enc, uint8_t type, uint32_t sample_index,
                       uint16_t count)
{
    put_u8(w, (uint8_t)PCG_PROTO_VERSION);
    put_u8(w, type);
    put_u16(w, enc->seq);
    put_u32(w, sample_index);
    put_u16(w, count);
}

/* Appends the CRC, closes the last block and the frame; returns the wire length or 0. */
static size_t writer_finish(pcg_writer_t *w, pcg_encoder_t *enc)
{
    uint16_t crc = w->crc;
    writer_put_raw(w, (uint8_t)(crc & 0xFFu));
    writer_put_raw(w, (uint8_t)(crc >> 8));
    if (!w->ok) {
        return 0;
    }
    if (w->code == 1u && w->after_full_block) {
        /* An empty block right after a full one carries nothing: leave it out (as COBS does). */
        w->pos = w->code_pos;
    } else {
        w->out[w->code_pos] = w->code;
    }
    if (w->pos >= w->size) {
        return 0;
    }
    w->out[w->pos++] = 0u;
    enc->seq = (uint16_t)(enc->seq + 1u);
    return w->pos;
}

void pcg_encoder_init(pcg_encoder_t *enc)
{
    enc->seq = 0;
}

size_t pcg_encode_device_info(pcg_encoder_t *enc, const pcg_device_info_t *info, uint32_t sample_index,
                              uint8_t *out, size_t out_size)
{
    pcg_writer_t w;
    writer_begin(&w, out, out_size);
    put_header(&w, enc, PCG_MSG_DEVICE_INFO, sample_index, 0);
    put_u8(&w, info->fw_major);
    put_u8(&w, info->fw_minor);
    put_u8(&w, info->fw_patch);
    put_u32(&w, info->rate_hz);
    put_u8(&w, info->sample_bits);
    put_u8(&w, info->channels);
    return writer_finish(&w, enc);
}

size_t pcg_encode_audio(pcg_encoder_t *enc, uint32_t first_index, const int16_t *samples, uint16_t count,
                        uint8_t *out, size_t out_size)
{
    pcg_writer_t w;
    uint16_t i;
    if (count == 0u || count > PCG_MAX_SAMPLES || samples == NULL) {
        return 0;
    }
    writer_begin(&w, out, out_size);
    put_header(&w, enc, PCG_MSG_AUDIO, first_index, count);
    for (i = 0; i < count; i++) {
        put_u16(&w, (uint16_t)samples[i]);
    }
    return writer_finish(&w, enc);
}

size_t pcg_encode_site_event(pcg_encoder_t *enc, uint8_t site, uint8_t source, uint32_t sample_index,
                             uint8_t *out, size_t out_size)
{
    pcg_writer_t w;
    if (site >= PCG_SITE_COUNT) {
        return 0;
    }
    writer_begin(&w, out, out_size);
    put_header(&w, enc, PCG_MSG_SITE_EVENT, sample_index, 0);
    put_u8(&w, site);
    put_u8(&w, source);
    return writer_finish(&w, enc);
}

size_t pcg_encode_status(pcg_encoder_t *enc, uint16_t battery_mv, uint8_t battery_pct, uint8_t flags,
                         uint32_t sample_index, uint8_t *out, size_t out_size)
{
    pcg_writer_t w;
    writer_begin(&w, out, out_size);
    put_header(&w, enc, PCG_MSG_STATUS, sample_index, 0);
    put_u16(&w, battery_mv);
    put_u8(&w, battery_pct);
    put_u8(&w, flags);
    return writer_finish(&w, enc);
}

size_t pcg_encode_error(pcg_encoder_t *enc, uint8_t code, const char *text, uint32_t sample_index,
                        uint8_t *out, size_t out_size)
{
    pcg_writer_t w;
    size_t len = 0;
    size_t i;
    while (text != NULL && text[len] != '\0' && len < 255u) {
        len++;
    }
    writer_begin(&w, out, out_size);
    put_header(&w, enc, PCG_MSG_ERROR, sample_index, 0);
    put_u8(&w, code);
    put_u8(&w, (uint8_t)len);
    for (i = 0; i < len; i++) {
        put_u8(&w, (uint8_t)text[i]);
    }
    return writer_finish(&w, enc);
}

/* ---- decoder: one byte at a time, COBS undone as bytes arrive ---- */

static void decoder_restart(pcg_decoder_t *dec)
{
    dec->len = 0;
    dec->code = 0;
    dec->remaining = 0;
    dec->overflow = 0;
}

void pcg_decoder_init(pcg_decoder_t *dec)
{
    pcg_rx_stats_t zero = {0, 0, 0, 0, 0, 0};
    decoder_restart(dec);
    dec->stats = zero;
}

static void decoder_push(pcg_decoder_t *dec, uint8_t byte)
{
    if (dec->len >= PCG_RX_MAX_FRAME) {
        dec->overflow = 1;
        return;
    }
    dec->buf[dec->len++] = byte;
}

static pcg_rx_result_t decoder_frame(pcg_decoder_t *dec, pcg_command_t *cmd)
{
    const uint8_t *f = dec->buf;
    uint16_t n = dec->len;
    uint16_t crc;
    uint16_t payload;
    if (dec->overflow) {
        dec->stats.oversize++;
        return PCG_RX_NONE;
    }
    if (dec->remaining != 0u || n < PCG_HEADER_SIZE + PCG_CRC_SIZE) {
        dec->stats.length_errors++;
        return PCG_RX_NONE;
    }
    crc = pcg_crc16(f, (size_t)(n - PCG_CRC_SIZE), 0xFFFFu);
    if (crc != (uint16_t)(f[n - 2u] | ((uint16_t)f[n - 1u] << 8))) {
        dec->stats.crc_errors++;
        return PCG_RX_NONE;
    }
    if ((f[0] >> 4) != PCG_PROTO_MAJOR) {
        dec->stats.version_errors++;
        return PCG_RX_NONE;
    }
    payload = (uint16_t)(n - PCG_HEADER_SIZE - PCG_CRC_SIZE);
    if ((f[8] | f[9]) != 0u || (f[1] == PCG_CMD_SET_SITE && payload < 1u)) {
        dec->stats.length_errors++; /* commands carry no samples; SET_SITE needs its site byte */
        return PCG_RX_NONE;
    }
    dec->stats.frames_ok++;
    cmd->type = f[1];
    cmd->seq = (uint16_t)(f[2] | ((uint16_t)f[3] << 8));
    cmd->site = 0;
    switch (f[1]) {
    case PCG_CMD_START:
    case PCG_CMD_STOP:
        return PCG_RX_COMMAND;
    case PCG_CMD_SET_SITE:
        cmd->site = f[PCG_HEADER_SIZE];
        if (cmd->site >= PCG_SITE_COUNT) {
            dec->stats.bad_commands++;
            return PCG_RX_BAD_COMMAND;
        }
        return PCG_RX_COMMAND;
    default:
        dec->stats.bad_commands++;
        return PCG_RX_BAD_COMMAND;
    }
}

pcg_rx_result_t pcg_decoder_feed(pcg_decoder_t *dec, uint8_t byte, pcg_command_t *cmd)
{
    pcg_rx_result_t result = PCG_RX_NONE;
    if (byte == 0u) {
        if (dec->code != 0u) {
            result = decoder_frame(dec, cmd);
        }
        decoder_restart(dec);
        return result;
    }
    if (dec->remaining == 0u) {
        /* A code byte: the previous block (unless it was a full 254-byte one) ended in a zero. */
        if (dec->code != 0u && dec->code != 0xFFu) {
            decoder_push(dec, 0u);
        }
        dec->code = byte;
        dec->remaining = (uint8_t)(byte - 1u);
    } else {
        decoder_push(dec, byte);
        dec->remaining--;
    }
    return result;
}
