/*
 * A stand-in for Tencent's libWeWorkFinanceSdk_C.so (WeCom chat archive), with the same C ABI
 * (WeWorkFinanceSdk_C.h): NewSdk, Init, GetChatData, DecryptData, GetMediaData, DestroySdk, the Slice_t and
 * MediaData_t helpers. The tests build it with gcc into a temporary directory; never commit a built .so.
 *
 * It serves recorded batches from a JSON Lines file named by the environment variable FINANCE_STANDIN_DATA or
 * set with StandinLoad(path); the file is re-read on every GetChatData call, so a test can append to it:
 *   {"seq": 7, "msgid": "...", "publickey_ver": 3, "encrypt_random_key": "...", "encrypt_chat_msg": "..."}
 *       an archive item, served verbatim inside {"errcode":0,"errmsg":"ok","chatdata":[...]} when its seq is
 *       greater than the requested seq (at most `limit` items, in file order);
 *   {"errcode": 10001}
 *       a fault: the first GetChatData calls return these codes, one per call, in file order (StandinLoad
 *       resets the count).
 *
 * The real DecryptData cipher is undocumented, so this one is a reversible transform defined here:
 * encrypt_chat_msg = base64(XOR(b"WWFS:" + plaintext, encrypt_key repeated)). A wrong key does not reproduce
 * the "WWFS:" prefix and DecryptData returns 10006, as the real library fails on a wrong key.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct Slice_t {
    char *buf;
    int len;
} Slice_t;

typedef struct MediaData {
    char *outindexbuf;
    int out_len;
    char *data;
    int data_len;
    int is_finish;
} MediaData_t;

typedef struct Sdk {
    int initialized;
} Sdk;

static char data_path[4096];
static int faults_served = 0;

static const char MAGIC[] = "WWFS:";

int StandinLoad(const char *path) {
    if (path == NULL) {
        data_path[0] = '\0';
    } else {
        strncpy(data_path, path, sizeof(data_path) - 1);
        data_path[sizeof(data_path) - 1] = '\0';
    }
    faults_served = 0;
    return 0;
}

static const char *current_path(void) {
    if (data_path[0] != '\0') return data_path;
    return getenv("FINANCE_STANDIN_DATA");
}

void *NewSdk(void) { return calloc(1, sizeof(Sdk)); }

int Init(void *sdk, const char *corpid, const char *secret) {
    if (sdk == NULL || corpid == NULL || secret == NULL || corpid[0] == '\0' || secret[0] == '\0') return 10000;
    ((Sdk *)sdk)->initialized = 1;
    return 0;
}

void DestroySdk(void *sdk) { free(sdk); }

Slice_t *NewSlice(void) { return (Slice_t *)calloc(1, sizeof(Slice_t)); }

void FreeSlice(Slice_t *slice) {
    if (slice == NULL) return;
    free(slice->buf);
    free(slice);
}

char *GetContentFromSlice(Slice_t *slice) { return slice ? slice->buf : NULL; }

int GetSliceLen(Slice_t *slice) { return slice ? slice->len : 0; }

static void slice_set(Slice_t *slice, char *buf, int len) {
    free(slice->buf);
    slice->buf = buf;
    slice->len = len;
}

/* A growable byte buffer. */
typedef struct Buf {
    char *p;
    size_t len, cap;
} Buf;

static int buf_put(Buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (b->len + n + 1 > cap) cap *= 2;
        char *p = (char *)realloc(b->p, cap);
        if (p == NULL) return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

/* The integer value of "key": in a JSON object line, or -1 when absent. */
static long long json_int(const char *line, const char *key) {
    char pattern[64];
    snprintf(pattern, sizeof(pattern), "\"%s\"", key);
    const char *at = strstr(line, pattern);
    if (at == NULL) return -1;
    at += strlen(pattern);
    while (*at == ' ' || *at == '\t') at++;
    if (*at != ':') return -1;
    at++;
    while (*at == ' ' || *at == '\t') at++;
    return strtoll(at, NULL, 10);
}

static void trim(char *line) {
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ')) line[--n] = '\0';
}

int GetChatData(void *sdk, unsigned long long seq, unsigned int limit, const char *proxy, const char *passwd,
                int timeout, Slice_t *chatDatas) {
    (void)proxy;
    (void)passwd;
    (void)timeout;
    if (sdk == NULL || chatDatas == NULL || !((Sdk *)sdk)->initialized || limit == 0 || limit > 1000) return 10000;
    const char *path = current_path();
    if (path == NULL) return 10000;
    FILE *f = fopen(path, "r");
    if (f == NULL) return 10001;
    char *line = NULL;
    size_t cap = 0;
    int faults_seen = 0;
    int fault = 0;
    Buf out = {0};
    unsigned int served = 0;
    buf_put(&out, "{\"errcode\":0,\"errmsg\":\"ok\",\"chatdata\":[", 39);
    while (getline(&line, &cap, f) != -1) {
        trim(line);
        if (line[0] != '{') continue;
        long long code = json_int(line, "errcode");
        if (code > 0) {
            if (faults_seen++ == faults_served && fault == 0) fault = (int)code;
            continue;
        }
        long long item_seq = json_int(line, "seq");
        if (item_seq < 0 || (unsigned long long)item_seq <= seq || served >= limit) continue;
        if (served++ > 0) buf_put(&out, ",", 1);
        buf_put(&out, line, strlen(line));
    }
    free(line);
    fclose(f);
    if (fault != 0) {
        faults_served++;
        free(out.p);
        return fault;
    }
    buf_put(&out, "]}", 2);
    slice_set(chatDatas, out.p, (int)out.len);
    return 0;
}

static int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Decodes standard base64 (padding optional); returns the length, or -1 on a bad character. */
static int b64_decode(const char *in, unsigned char *out) {
    int len = 0, bits = 0;
    unsigned int acc = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
        if (*p == '=') break;
        int v = b64_value(*p);
        if (v < 0) return -1;
        acc = (acc << 6) | (unsigned int)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[len++] = (unsigned char)((acc >> bits) & 0xFF);
        }
    }
    return len;
}

int DecryptData(const char *encrypt_key, const char *encrypt_msg, Slice_t *msg) {
    if (encrypt_key == NULL || encrypt_msg == NULL || msg == NULL) return 10000;
    size_t key_len = strlen(encrypt_key);
    if (key_len == 0) return 10008;
    unsigned char *plain = (unsigned char *)malloc(strlen(encrypt_msg) + 1);
    if (plain == NULL) return 10003;
    int n = b64_decode(encrypt_msg, plain);
    if (n < 0) {
        free(plain);
        return 10002;
    }
    for (int i = 0; i < n; i++) plain[i] ^= (unsigned char)encrypt_key[i % key_len];
    size_t magic = sizeof(MAGIC) - 1;
    if ((size_t)n < magic || memcmp(plain, MAGIC, magic) != 0) {
        free(plain);
        return 10006;
    }
    int body = n - (int)magic;
    char *buf = (char *)malloc((size_t)body + 1);
    if (buf == NULL) {
        free(plain);
        return 10003;
    }
    memcpy(buf, plain + magic, (size_t)body);
    buf[body] = '\0';
    free(plain);
    slice_set(msg, buf, body);
    return 0;
}

int GetMediaData(void *sdk, const char *indexbuf, const char *sdkFileid, const char *proxy, const char *passwd,
                 int timeout, MediaData_t *media_data) {
    (void)sdk;
    (void)indexbuf;
    (void)proxy;
    (void)passwd;
    (void)timeout;
    (void)media_data;
    return sdkFileid == NULL ? 10000 : 10005; /* media is not recorded by the stand-in */
}

MediaData_t *NewMediaData(void) { return (MediaData_t *)calloc(1, sizeof(MediaData_t)); }

void FreeMediaData(MediaData_t *media_data) {
    if (media_data == NULL) return;
    free(media_data->outindexbuf);
    free(media_data->data);
    free(media_data);
}

char *GetOutIndexBuf(MediaData_t *media_data) { return media_data->outindexbuf; }
char *GetData(MediaData_t *media_data) { return media_data->data; }
int GetIndexLen(MediaData_t *media_data) { return media_data->out_len; }
int GetDataLen(MediaData_t *media_data) { return media_data->data_len; }
int IsMediaDataFinish(MediaData_t *media_data) { return media_data->is_finish; }
