/*
 * _cwalk: the inner loop of dicomframe's header walker, in C.
 *
 * It mirrors _Walker.walk in _parse.py exactly (same rows, same errors) for the
 * common case: little endian, explicit or implicit VR, SpecificCharacterSet
 * absent, ISO_IR 6, ISO_IR 100 or ISO_IR 192. Anything else raises
 * WalkError(CODE_UNSUPPORTED) and the caller uses the pure-Python walker, which
 * stays the reference implementation. Tests compare both on every corpus file.
 *
 * Rows are tuples (tag_path, tag, vr, vm, value, private_creator, depth,
 * length, offset). Errors are raised as WalkError(code, what, tag, pos, upto)
 * and turned into ParseError messages by _parse.py: no value read from a file
 * is ever put in an error.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define UNDEFINED 0xFFFFFFFFu
#define MAX_INLINE 1024

enum { K_TEXT_CS = 1, K_TEXT = 2, K_NUM = 3, K_AT = 4, K_BULK = 5, K_SQ = 6 };
enum { CODE_NEED = 1, CODE_TRUNCATED = 2, CODE_CORRUPT = 3, CODE_UNSUPPORTED = 4 };
/* truncated: what */
enum { T_HEADER = 1, T_VALUE = 2, T_SEQUENCE = 3, T_ITEM = 4, T_FRAGMENT = 5 };
/* corrupt: what */
enum { C_DELIM = 1, C_VR = 2, C_ITEM = 3, C_FRAGMENT = 4, C_OVERRUN = 5, C_DEPTH = 6, C_SEQ_OVERRUN = 7 };
/* deeper nesting is refused (a damaged or hostile file): real ones stay far below, and the
 * path of every row grows with its depth (memory would grow with its square) */
#define MAX_DEPTH 64
enum { CS_LATIN1 = 0, CS_UTF8 = 1 };

typedef struct {
    const char *name;
    int kind;
    int long_form;
    int keep_leading; /* only trailing padding removed */
    int vm1_text;     /* backslash is not a delimiter */
    int num_size;
    char num_fmt;
    PyObject *str;
} VRInfo;

static VRInfo VRS[] = {
    {"SH", K_TEXT_CS, 0, 0, 0, 0, 0, NULL}, {"LO", K_TEXT_CS, 0, 0, 0, 0, 0, NULL},
    {"ST", K_TEXT_CS, 0, 1, 1, 0, 0, NULL}, {"LT", K_TEXT_CS, 0, 1, 1, 0, 0, NULL},
    {"UT", K_TEXT_CS, 1, 1, 1, 0, 0, NULL}, {"PN", K_TEXT_CS, 0, 0, 0, 0, 0, NULL},
    {"UC", K_TEXT_CS, 1, 1, 0, 0, 0, NULL}, {"AE", K_TEXT, 0, 0, 0, 0, 0, NULL},
    {"AS", K_TEXT, 0, 0, 0, 0, 0, NULL},    {"CS", K_TEXT, 0, 0, 0, 0, 0, NULL},
    {"DA", K_TEXT, 0, 0, 0, 0, 0, NULL},    {"DS", K_TEXT, 0, 0, 0, 0, 0, NULL},
    {"DT", K_TEXT, 0, 0, 0, 0, 0, NULL},    {"IS", K_TEXT, 0, 0, 0, 0, 0, NULL},
    {"TM", K_TEXT, 0, 0, 0, 0, 0, NULL},    {"UI", K_TEXT, 0, 0, 0, 0, 0, NULL},
    {"UR", K_TEXT, 1, 1, 1, 0, 0, NULL},    {"US", K_NUM, 0, 0, 0, 2, 'H', NULL},
    {"SS", K_NUM, 0, 0, 0, 2, 'h', NULL},   {"UL", K_NUM, 0, 0, 0, 4, 'I', NULL},
    {"SL", K_NUM, 0, 0, 0, 4, 'i', NULL},   {"FL", K_NUM, 0, 0, 0, 4, 'f', NULL},
    {"FD", K_NUM, 0, 0, 0, 8, 'd', NULL},   {"SV", K_NUM, 1, 0, 0, 8, 'q', NULL},
    {"UV", K_NUM, 1, 0, 0, 8, 'Q', NULL},   {"AT", K_AT, 0, 0, 0, 0, 0, NULL},
    {"OB", K_BULK, 1, 0, 0, 0, 0, NULL},    {"OW", K_BULK, 1, 0, 0, 0, 0, NULL},
    {"OF", K_BULK, 1, 0, 0, 0, 0, NULL},    {"OD", K_BULK, 1, 0, 0, 0, 0, NULL},
    {"OL", K_BULK, 1, 0, 0, 0, 0, NULL},    {"OV", K_BULK, 1, 0, 0, 0, 0, NULL},
    {"UN", K_BULK, 1, 0, 0, 0, 0, NULL},    {"SQ", K_SQ, 1, 0, 0, 0, 0, NULL},
};
#define N_VRS ((int)(sizeof(VRS) / sizeof(VRS[0])))
static signed char VR_INDEX[26 * 26];
static int VR_UN, VR_SQ, VR_US, VR_SS, VR_UL, VR_LO, VR_OW;

static PyObject *WalkError;
static PyObject *EMPTY_STR;

typedef struct {
    const unsigned char *buf;
    Py_ssize_t blen;
    Py_ssize_t size;
    PyObject *rows;
    int track;
    int meta_only;
    PyObject *implicit_vrs; /* dict tag -> VR str (implicit VR lookups) */
    PyObject *un_vrs;       /* dict tag -> VR str (UN with a known public VR) */
    PyObject *vr_lookup;    /* callable(tag) -> VR str or None, for repeating groups */
    PyObject *private_vr;   /* callable(group, elem, creator) -> VR str */
    PyObject *bulk_text;    /* callable(bytes) -> str or None */
    PyObject *record;       /* dict keyword -> value of top-level attributes, or None */
    PyObject *keywords;     /* dict tag -> keyword */
    PyObject *keyword_lookup; /* callable(tag) -> keyword or None (repeating groups) */
    long pixel_rep;
    Py_ssize_t pixel_off, pixel_len;
    int stopped;
} W;

static int vr_index_of(const unsigned char *p) {
    int a = p[0] - 'A', b = p[1] - 'A';
    if (a < 0 || a >= 26 || b < 0 || b >= 26) return -1;
    return VR_INDEX[a * 26 + b];
}

static int vr_index_of_str(PyObject *s) {
    if (!PyUnicode_Check(s) || PyUnicode_GET_LENGTH(s) != 2) return -1;
    Py_UCS4 a = PyUnicode_READ_CHAR(s, 0), b = PyUnicode_READ_CHAR(s, 1);
    if (a < 'A' || a > 'Z' || b < 'A' || b > 'Z') return -1;
    return VR_INDEX[(a - 'A') * 26 + (b - 'A')];
}

static void raise_walk(int code, int what, uint32_t tag, Py_ssize_t pos, Py_ssize_t upto) {
    PyObject *args = Py_BuildValue("(iiknn)", code, what, (unsigned long)tag, pos, upto);
    if (args) {
        PyErr_SetObject(WalkError, args);
        Py_DECREF(args);
    }
}

static inline uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* make bytes [start, stop) available or raise NEED / TRUNCATED */
static int need(W *w, Py_ssize_t start, Py_ssize_t stop, int what, uint32_t tag) {
    if (stop <= w->blen) return 0;
    if (stop > w->size) {
        raise_walk(CODE_TRUNCATED, what, tag, start, stop);
        return -1;
    }
    raise_walk(CODE_NEED, what, tag, start, stop);
    return -1;
}

static PyObject *decode_text(const unsigned char *p, Py_ssize_t n, int keep_leading, int charset) {
    Py_ssize_t a = 0, b = n;
    while (b > a && (p[b - 1] == ' ' || p[b - 1] == 0)) b--;
    if (!keep_leading)
        while (a < b && (p[a] == ' ' || p[a] == 0)) a++;
    if (charset == CS_UTF8) return PyUnicode_DecodeUTF8((const char *)p + a, b - a, "replace");
    return PyUnicode_DecodeLatin1((const char *)p + a, b - a, NULL);
}

static Py_ssize_t count_backslash(const unsigned char *p, Py_ssize_t n) {
    Py_ssize_t c = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (p[i] == '\\') c++;
    return c;
}

/* numbers as decimal strings joined by backslash, exactly as Python's str() of each */
static PyObject *format_numbers(const unsigned char *p, Py_ssize_t n, const VRInfo *v, long *first) {
    Py_ssize_t count = n / v->num_size;
    size_t cap = (size_t)count * 32 + 1, len = 0;
    char *out = PyMem_Malloc(cap);
    if (!out) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < count; i++) {
        const unsigned char *q = p + i * v->num_size;
        if (i) out[len++] = '\\';
        int w = 0;
        switch (v->num_fmt) {
        case 'H': {
            uint16_t x = rd16(q);
            if (i == 0) *first = x;
            w = snprintf(out + len, cap - len, "%u", (unsigned)x);
            break;
        }
        case 'h': {
            int16_t x = (int16_t)rd16(q);
            if (i == 0) *first = x;
            w = snprintf(out + len, cap - len, "%d", (int)x);
            break;
        }
        case 'I':
            w = snprintf(out + len, cap - len, "%lu", (unsigned long)rd32(q));
            break;
        case 'i':
            w = snprintf(out + len, cap - len, "%ld", (long)(int32_t)rd32(q));
            break;
        case 'q':
            w = snprintf(out + len, cap - len, "%lld",
                         (long long)(int64_t)((uint64_t)rd32(q) | ((uint64_t)rd32(q + 4) << 32)));
            break;
        case 'Q':
            w = snprintf(out + len, cap - len, "%llu",
                         (unsigned long long)((uint64_t)rd32(q) | ((uint64_t)rd32(q + 4) << 32)));
            break;
        case 'f':
        case 'd': {
            double d;
            if (v->num_fmt == 'f') {
                uint32_t u = rd32(q);
                float f;
                memcpy(&f, &u, 4);
                d = f;
            } else {
                uint64_t u = (uint64_t)rd32(q) | ((uint64_t)rd32(q + 4) << 32);
                memcpy(&d, &u, 8);
            }
            /* the same call float.__repr__ makes */
            char *r = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
            if (!r) {
                PyMem_Free(out);
                return NULL;
            }
            w = snprintf(out + len, cap - len, "%s", r);
            PyMem_Free(r);
            break;
        }
        default:
            PyMem_Free(out);
            PyErr_SetString(PyExc_ValueError, "unknown number format");
            return NULL;
        }
        len += (size_t)w;
    }
    PyObject *s = PyUnicode_DecodeASCII(out, (Py_ssize_t)len, NULL);
    PyMem_Free(out);
    return s;
}

static PyObject *format_at(const unsigned char *p, Py_ssize_t count) {
    size_t cap = (size_t)count * 9 + 1, len = 0;
    char *out = PyMem_Malloc(cap);
    if (!out) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < count; i++) {
        if (i) out[len++] = '\\';
        len += (size_t)snprintf(out + len, cap - len, "%04X%04X", rd16(p + 4 * i), rd16(p + 4 * i + 2));
    }
    PyObject *s = PyUnicode_DecodeASCII(out, (Py_ssize_t)len, NULL);
    PyMem_Free(out);
    return s;
}

static int append_row(W *w, PyObject *path, uint32_t tag, PyObject *vr, Py_ssize_t vm, PyObject *value,
                      PyObject *creator, int depth, uint32_t length, Py_ssize_t offset) {
    PyObject *row = PyTuple_New(9);
    if (!row) return -1;
    Py_INCREF(path);
    PyTuple_SET_ITEM(row, 0, path);
    PyTuple_SET_ITEM(row, 1, PyLong_FromUnsignedLong(tag));
    Py_INCREF(vr);
    PyTuple_SET_ITEM(row, 2, vr);
    PyTuple_SET_ITEM(row, 3, PyLong_FromSsize_t(vm));
    if (!value) value = Py_None;
    Py_INCREF(value);
    PyTuple_SET_ITEM(row, 4, value);
    if (!creator) creator = Py_None;
    Py_INCREF(creator);
    PyTuple_SET_ITEM(row, 5, creator);
    PyTuple_SET_ITEM(row, 6, PyLong_FromLong(depth));
    PyTuple_SET_ITEM(row, 7, PyLong_FromUnsignedLong(length));
    if (offset >= 0) {
        PyTuple_SET_ITEM(row, 8, PyLong_FromSsize_t(offset));
    } else {
        Py_INCREF(Py_None);
        PyTuple_SET_ITEM(row, 8, Py_None);
    }
    for (int i = 0; i < 9; i++)
        if (!PyTuple_GET_ITEM(row, i)) {
            Py_DECREF(row);
            return -1;
        }
    int r = PyList_Append(w->rows, row);
    Py_DECREF(row);
    return r;
}

/* creators: dict (group<<8|block) -> str, per dataset level */
static PyObject *lookup_creator(PyObject *creators, uint32_t key) {
    PyObject *k = PyLong_FromUnsignedLong(key);
    if (!k) return NULL;
    PyObject *v = PyDict_GetItemWithError(creators, k);
    Py_DECREF(k);
    if (!v && PyErr_Occurred()) return NULL;
    if (!v) v = Py_None;
    Py_INCREF(v);
    return v;
}

static int dict_tag_vr(PyObject *dict, uint32_t tag, PyObject **out) {
    PyObject *k = PyLong_FromUnsignedLong(tag);
    if (!k) return -1;
    PyObject *v = PyDict_GetItemWithError(dict, k);
    Py_DECREF(k);
    if (!v && PyErr_Occurred()) return -1;
    *out = v; /* borrowed */
    return 0;
}

static Py_ssize_t walk(W *w, Py_ssize_t pos, Py_ssize_t end, int depth, PyObject *prefix, int explicit_,
                       int charset);

static Py_ssize_t skip_fragments(W *w, Py_ssize_t pos, uint32_t tag) {
    for (;;) {
        if (need(w, pos, pos + 8, T_FRAGMENT, tag) < 0) return -1;
        const unsigned char *p = w->buf + pos;
        uint32_t t = ((uint32_t)rd16(p) << 16) | rd16(p + 2);
        uint32_t flen = rd32(p + 4);
        if (t == 0xFFFEE0DDu) return pos + 8;
        if (t != 0xFFFEE000u || flen == UNDEFINED) {
            raise_walk(CODE_CORRUPT, C_FRAGMENT, tag, pos, 0);
            return -1;
        }
        pos += 8 + (Py_ssize_t)flen;
    }
}

static Py_ssize_t sequence(W *w, Py_ssize_t pos, uint32_t length, int depth, PyObject *path, int explicit_,
                           int charset, uint32_t tag, Py_ssize_t *n_items) {
    Py_ssize_t end = length == UNDEFINED ? PY_SSIZE_T_MAX : pos + (Py_ssize_t)length;
    if (depth > MAX_DEPTH) {
        raise_walk(CODE_CORRUPT, C_DEPTH, tag, pos, pos);
        return -1;
    }
    if (length != UNDEFINED && end > w->size) {
        raise_walk(CODE_TRUNCATED, T_SEQUENCE, tag, pos, end);
        return -1;
    }
    Py_ssize_t n = 0;
    while (pos < end) {
        if (need(w, pos, pos + 8, T_ITEM, tag) < 0) return -1;
        const unsigned char *p = w->buf + pos;
        uint32_t t = ((uint32_t)rd16(p) << 16) | rd16(p + 2);
        uint32_t ilen = rd32(p + 4);
        if (t == 0xFFFEE0DDu) {
            pos += 8;
            break;
        }
        if (t != 0xFFFEE000u) {
            raise_walk(CODE_CORRUPT, C_ITEM, tag, pos, 0);
            return -1;
        }
        pos += 8;
        PyObject *prefix = PyUnicode_FromFormat("%U[%zd].", path, n);
        if (!prefix) return -1;
        Py_ssize_t r;
        if (ilen == UNDEFINED) {
            r = walk(w, pos, PY_SSIZE_T_MAX, depth, prefix, explicit_, charset);
            if (r >= 0) pos = r;
        } else {
            r = walk(w, pos, pos + (Py_ssize_t)ilen, depth, prefix, explicit_, charset);
            if (r >= 0) pos += (Py_ssize_t)ilen;
        }
        Py_DECREF(prefix);
        if (r < 0) return -1;
        n++;
    }
    if (length != UNDEFINED && pos != end) {
        /* items running past the sequence's own length: a reader that skips the sequence
         * by its length would read the rest of an item as elements of the data set */
        raise_walk(CODE_CORRUPT, C_SEQ_OVERRUN, tag, end, 0);
        return -1;
    }
    *n_items = n;
    return pos;
}

static int charset_of(const unsigned char *p, Py_ssize_t n, int *charset) {
    Py_ssize_t a = 0, b = n;
    while (b > a && (p[b - 1] == ' ' || p[b - 1] == 0)) b--;
    while (a < b && (p[a] == ' ' || p[a] == 0)) a++;
    Py_ssize_t len = b - a;
    const char *s = (const char *)p + a;
    if (len == 0 || (len == 8 && memcmp(s, "ISO_IR 6", 8) == 0) ||
        (len == 10 && memcmp(s, "ISO_IR 100", 10) == 0)) {
        *charset = CS_LATIN1;
        return 0;
    }
    if (len == 10 && memcmp(s, "ISO_IR 192", 10) == 0) {
        *charset = CS_UTF8;
        return 0;
    }
    return -1;
}

static Py_ssize_t walk(W *w, Py_ssize_t pos, Py_ssize_t end, int depth, PyObject *prefix, int explicit_,
                       int charset) {
    PyObject *creators = PyDict_New();
    if (!creators) return -1;
    Py_ssize_t result = -1;
    PyObject *path = NULL, *value = NULL, *creator = NULL;
    const int undefined_end = end == PY_SSIZE_T_MAX;

    while (pos < end) {
        if (pos + 12 > w->blen) {
            if (pos + 8 > w->size) {
                if (depth == 0 && undefined_end && pos >= w->size) {
                    result = pos;
                    goto done;
                }
                if (depth == 0 && undefined_end && w->size - pos < 8) {
                    if (need(w, pos, w->size, T_HEADER, 0) < 0) goto done;
                    int zero = 1;
                    for (Py_ssize_t i = pos; i < w->size; i++)
                        if (w->buf[i]) zero = 0;
                    if (zero) {
                        result = w->size;
                        goto done;
                    }
                }
                raise_walk(CODE_TRUNCATED, T_HEADER, 0, pos, pos + 8);
                goto done;
            }
            Py_ssize_t stop = pos + 12 < w->size ? pos + 12 : w->size;
            if (need(w, pos, stop, T_HEADER, 0) < 0) goto done;
        }
        const unsigned char *p = w->buf + pos;
        uint16_t group = rd16(p), elem = rd16(p + 2);
        uint32_t tag = ((uint32_t)group << 16) | elem;
        if (w->meta_only && depth == 0 && group != 0x0002) {
            result = pos;
            goto done;
        }
        if (group == 0xFFFE) {
            if (tag == 0xFFFEE00Du) {
                if (undefined_end) {
                    result = pos + 8;
                    goto done;
                }
                pos += 8;
                continue;
            }
            if (tag == 0xFFFEE0DDu && depth == 0) {
                pos += 8;
                continue;
            }
            raise_walk(CODE_CORRUPT, C_DELIM, tag, pos, 0);
            goto done;
        }
        int vi;
        uint32_t length;
        Py_ssize_t vpos;
        if (explicit_) {
            vi = vr_index_of(p + 4);
            if (vi < 0) {
                if ((p[4] == ' ' && p[5] == ' ') || (p[4] == 0 && p[5] == 0)) {
                    vi = VR_UN;
                } else {
                    raise_walk(CODE_CORRUPT, C_VR, tag, pos, 0);
                    goto done;
                }
            }
            if (VRS[vi].long_form) {
                if (pos + 12 > w->blen) {
                    raise_walk(pos + 12 > w->size ? CODE_TRUNCATED : CODE_NEED, T_HEADER, 0, pos, pos + 12);
                    goto done;
                }
                length = rd32(p + 8);
                vpos = pos + 12;
            } else {
                length = rd16(p + 6);
                vpos = pos + 8;
            }
        } else {
            length = rd32(p + 4);
            vpos = pos + 8;
            /* implicit VR */
            if (length == UNDEFINED && !(tag == 0x7FE00010u || tag == 0x7FE00008u || tag == 0x7FE00009u)) {
                vi = VR_SQ;
            } else if (group & 1) {
                if (elem == 0)
                    vi = VR_UL;
                else if (elem <= 0xFF)
                    vi = elem >= 0x10 ? VR_LO : VR_UN;
                else {
                    PyObject *owner = lookup_creator(creators, ((uint32_t)group << 8) | (elem >> 8));
                    if (!owner) goto done;
                    if (owner == Py_None) {
                        vi = VR_UN;
                    } else {
                        PyObject *r = PyObject_CallFunction(w->private_vr, "iiO", (int)group, (int)elem, owner);
                        if (!r) {
                            Py_DECREF(owner);
                            goto done;
                        }
                        vi = vr_index_of_str(r);
                        Py_DECREF(r);
                        if (vi < 0) vi = VR_UN;
                    }
                    Py_DECREF(owner);
                }
            } else {
                PyObject *vrs = NULL;
                if (dict_tag_vr(w->implicit_vrs, tag, &vrs) < 0) goto done;
                if (vrs == NULL) {
                    PyObject *r = PyObject_CallFunction(w->vr_lookup, "k", (unsigned long)tag);
                    if (!r) goto done;
                    vi = r == Py_None ? VR_UN : vr_index_of_str(r);
                    if (vi < 0) {
                        /* ambiguous: resolve like _resolve_ambiguous */
                        PyObject *ow = PyUnicode_FromString("OW");
                        int has_ow = ow ? PySequence_Contains(r, ow) : -1;
                        Py_XDECREF(ow);
                        if (has_ow < 0) {
                            Py_DECREF(r);
                            goto done;
                        }
                        if (has_ow)
                            vi = VR_OW;
                        else if (PyUnicode_CompareWithASCIIString(r, "US or SS") == 0)
                            vi = w->pixel_rep == 1 ? VR_SS : VR_US;
                        else {
                            PyObject *first = PyUnicode_Substring(r, 0, 2);
                            vi = first ? vr_index_of_str(first) : -1;
                            Py_XDECREF(first);
                            if (vi < 0) vi = VR_UN;
                        }
                    }
                    Py_DECREF(r);
                } else if (PyUnicode_GET_LENGTH(vrs) == 2) {
                    vi = vr_index_of_str(vrs);
                    if (vi < 0) vi = VR_UN;
                } else if (PyUnicode_CompareWithASCIIString(vrs, "US or SS") == 0) {
                    vi = w->pixel_rep == 1 ? VR_SS : VR_US;
                } else {
                    raise_walk(CODE_UNSUPPORTED, 0, tag, pos, 0);
                    goto done;
                }
            }
        }
        int was_un = vi == VR_UN;
        if (was_un) {
            if (!(group & 1) && elem) {
                PyObject *known = NULL;
                if (dict_tag_vr(w->un_vrs, tag, &known) < 0) goto done;
                if (known) {
                    int k = vr_index_of_str(known);
                    if (k >= 0) vi = k;
                } else {
                    /* repeating groups (50xx, 60xx): ask the dictionary */
                    PyObject *r = PyObject_CallFunction(w->vr_lookup, "k", (unsigned long)tag);
                    if (!r) goto done;
                    if (r != Py_None) {
                        int k = vr_index_of_str(r);
                        if (k >= 0) vi = k;
                    }
                    Py_DECREF(r);
                }
            } else if ((group & 1) && elem > 0xFF && length != UNDEFINED) {
                PyObject *owner = lookup_creator(creators, ((uint32_t)group << 8) | (elem >> 8));
                if (!owner) goto done;
                if (owner != Py_None) {
                    PyObject *r = PyObject_CallFunction(w->private_vr, "iiO", (int)group, (int)elem, owner);
                    if (!r) {
                        Py_DECREF(owner);
                        goto done;
                    }
                    int k = vr_index_of_str(r);
                    Py_DECREF(r);
                    if (k >= 0) vi = k;
                }
                Py_DECREF(owner);
            }
        }
        const VRInfo *v = &VRS[vi];

        creator = NULL;
        if ((group & 1) && elem > 0xFF) {
            creator = lookup_creator(creators, ((uint32_t)group << 8) | (elem >> 8));
            if (!creator) goto done;
            if (creator == Py_None) {
                Py_DECREF(creator);
                creator = NULL;
            }
        }
        {
            static const char HEXD[] = "0123456789ABCDEF";
            char hx[9];
            for (int i = 0; i < 8; i++) hx[i] = HEXD[(tag >> (28 - 4 * i)) & 0xF];
            hx[8] = 0;
            path = PyUnicode_GET_LENGTH(prefix) ? PyUnicode_FromFormat("%U%s", prefix, hx)
                                                : PyUnicode_FromStringAndSize(hx, 8);
        }
        if (!path) goto done;

        if (depth == 0 && (tag == 0x7FE00010u || tag == 0x7FE00008u || tag == 0x7FE00009u)) {
            if (append_row(w, path, tag, v->str, 1, NULL, creator, depth, length, w->track ? vpos : -1) < 0)
                goto done;
            w->pixel_off = vpos;
            w->pixel_len = length == UNDEFINED ? -1 : (Py_ssize_t)length;
            w->stopped = 1;
            result = pos;
            goto done;
        }
        if (v->kind == K_SQ || (length == UNDEFINED && was_un)) {
            Py_ssize_t idx = PyList_GET_SIZE(w->rows);
            if (append_row(w, path, tag, VRS[VR_SQ].str, 0, NULL, creator, depth, length, -1) < 0) goto done;
            Py_ssize_t n_items = 0;
            Py_ssize_t r = sequence(w, vpos, length, depth + 1, path, explicit_ && !was_un, charset, tag, &n_items);
            if (r < 0) goto done;
            if (n_items) {
                /* replace the row's vm */
                PyObject *row = PyList_GET_ITEM(w->rows, idx);
                PyObject *nvm = PyLong_FromSsize_t(n_items);
                if (!nvm) goto done;
                PyObject *newrow = PyTuple_New(9);
                if (!newrow) {
                    Py_DECREF(nvm);
                    goto done;
                }
                for (int i = 0; i < 9; i++) {
                    PyObject *it = i == 3 ? nvm : PyTuple_GET_ITEM(row, i);
                    if (i != 3) Py_INCREF(it);
                    PyTuple_SET_ITEM(newrow, i, it);
                }
                if (PyList_SetItem(w->rows, idx, newrow) < 0) goto done;
            }
            pos = r;
            Py_CLEAR(path);
            Py_CLEAR(creator);
            continue;
        }
        if (length == UNDEFINED) {
            if (append_row(w, path, tag, v->str, 1, NULL, creator, depth, length, -1) < 0) goto done;
            Py_ssize_t r = skip_fragments(w, vpos, tag);
            if (r < 0) goto done;
            pos = r;
            Py_CLEAR(path);
            Py_CLEAR(creator);
            continue;
        }
        Py_ssize_t vend = vpos + (Py_ssize_t)length;
        Py_ssize_t vm = 0;
        value = NULL;
        if (v->kind == K_BULK && length > MAX_INLINE) {
            if (vend > w->size) { /* bulk data is not read here, but must be there */
                raise_walk(CODE_TRUNCATED, T_VALUE, tag, vpos, vend);
                goto done;
            }
            vm = 1;
        } else {
            if (vend > w->blen) {
                raise_walk(vend > w->size ? CODE_TRUNCATED : CODE_NEED, T_VALUE, tag, vpos, vend);
                goto done;
            }
            const unsigned char *q = w->buf + vpos;
            if (v->kind == K_TEXT || v->kind == K_TEXT_CS) {
                value = decode_text(q, (Py_ssize_t)length, v->keep_leading, v->kind == K_TEXT_CS ? charset : CS_LATIN1);
                if (!value) goto done;
                if (PyUnicode_GET_LENGTH(value) == 0)
                    vm = 0;
                else if (v->vm1_text)
                    vm = 1;
                else
                    vm = count_backslash(q, (Py_ssize_t)length) + 1;
                if (tag == 0x00080005u) {
                    int cs;
                    if (charset_of(q, (Py_ssize_t)length, &cs) < 0) {
                        raise_walk(CODE_UNSUPPORTED, 0, tag, pos, 0);
                        goto done;
                    }
                    charset = cs;
                }
            } else if (v->kind == K_NUM) {
                vm = (Py_ssize_t)length / v->num_size;
                if (length > MAX_INLINE || length % v->num_size) {
                    value = NULL;
                } else {
                    long first = -1;
                    value = format_numbers(q, (Py_ssize_t)length, v, &first);
                    if (!value) goto done;
                    if (tag == 0x00280103u && vm > 0) w->pixel_rep = first;
                }
            } else if (v->kind == K_AT) {
                vm = (Py_ssize_t)length / 4;
                value = format_at(q, vm);
                if (!value) goto done;
            } else {
                if (length == 0) {
                    value = EMPTY_STR;
                    Py_INCREF(value);
                    vm = 0;
                } else {
                    PyObject *raw = PyBytes_FromStringAndSize((const char *)q, (Py_ssize_t)length);
                    if (!raw) goto done;
                    value = PyObject_CallOneArg(w->bulk_text, raw);
                    Py_DECREF(raw);
                    if (!value) goto done;
                    if (value == Py_None) Py_CLEAR(value);
                    vm = 1;
                }
            }
        }
        if ((group & 1) && elem >= 0x10 && elem <= 0xFF) {
            Py_CLEAR(creator);
            if (value && PyUnicode_GET_LENGTH(value) > 0) {
                creator = value;
                Py_INCREF(creator);
                PyObject *k = PyLong_FromUnsignedLong(((uint32_t)group << 8) | elem);
                if (!k) goto done;
                int r = PyDict_SetItem(creators, k, creator);
                Py_DECREF(k);
                if (r < 0) goto done;
            }
        }
        if (depth == 0 && w->record != Py_None && tag >= 0x00030000u && elem != 0 && v->kind != K_BULK &&
            !(group & 1)) {
            PyObject *k = PyLong_FromUnsignedLong(tag);
            if (!k) goto done;
            PyObject *kwd = PyDict_GetItemWithError(w->keywords, k);
            if (kwd) Py_INCREF(kwd);
            Py_DECREF(k);
            if (!kwd) {
                if (PyErr_Occurred()) goto done;
                kwd = PyObject_CallFunction(w->keyword_lookup, "k", (unsigned long)tag);
                if (!kwd) goto done;
            }
            if (kwd != Py_None) {
                int r = PyDict_SetItem(w->record, kwd, value ? value : Py_None);
                if (r < 0) {
                    Py_DECREF(kwd);
                    goto done;
                }
            }
            Py_DECREF(kwd);
        }
        if (append_row(w, path, tag, v->str, vm, value, creator, depth, length, w->track ? vpos : -1) < 0)
            goto done;
        Py_CLEAR(path);
        Py_CLEAR(value);
        Py_CLEAR(creator);
        pos = vend;
    }
    if (pos > end && !undefined_end) {
        raise_walk(CODE_CORRUPT, C_OVERRUN, 0, pos, 0);
        goto done;
    }
    result = pos;
done:
    Py_XDECREF(path);
    Py_XDECREF(value);
    Py_XDECREF(creator);
    Py_DECREF(creators);
    return result;
}

static PyObject *py_walk(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"buf",          "pos",        "size",      "rows",      "explicit",
                             "meta_only",    "track",      "implicit_vrs", "un_vrs", "vr_lookup",
                             "private_vr",   "bulk_text",  "pixel_rep", "record", "keywords",
                             "keyword_lookup", NULL};
    Py_buffer view;
    Py_ssize_t pos, size;
    PyObject *rows, *implicit_vrs, *un_vrs, *vr_lookup, *private_vr, *bulk_text;
    int explicit_, meta_only, track;
    long pixel_rep = 0;
    PyObject *record = Py_None, *keywords = Py_None, *keyword_lookup = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*nnO!pppO!O!OOO|lOOO", kwlist, &view, &pos, &size, &PyList_Type,
                                     &rows, &explicit_, &meta_only, &track, &PyDict_Type, &implicit_vrs,
                                     &PyDict_Type, &un_vrs, &vr_lookup, &private_vr, &bulk_text, &pixel_rep,
                                     &record, &keywords, &keyword_lookup))
        return NULL;
    if (record != Py_None && (!PyDict_Check(record) || !PyDict_Check(keywords))) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_TypeError, "record and keywords must be dicts");
        return NULL;
    }
    W w;
    w.buf = (const unsigned char *)view.buf;
    w.blen = view.len;
    w.size = size;
    w.rows = rows;
    w.track = track;
    w.meta_only = meta_only;
    w.implicit_vrs = implicit_vrs;
    w.un_vrs = un_vrs;
    w.vr_lookup = vr_lookup;
    w.private_vr = private_vr;
    w.bulk_text = bulk_text;
    w.record = record;
    w.keywords = keywords;
    w.keyword_lookup = keyword_lookup;
    w.pixel_rep = pixel_rep;
    w.pixel_off = -1;
    w.pixel_len = -1;
    w.stopped = 0;
    PyObject *prefix = EMPTY_STR;
    Py_ssize_t r = walk(&w, pos, PY_SSIZE_T_MAX, 0, prefix, explicit_, CS_LATIN1);
    PyBuffer_Release(&view);
    if (r < 0) return NULL;
    return Py_BuildValue("(nnnil)", r, w.pixel_off, w.pixel_len, w.stopped, w.pixel_rep);
}


/* ---- Arrow buffers from Python sequences (no pyarrow conversion, no pandas import) ---- */

typedef struct {
    char *data;
    size_t len, cap;
} Buf;

static int buf_reserve(Buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    char *p = PyMem_Realloc(b->data, cap);
    if (!p) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

static PyObject *buf_bytes(Buf *b) {
    PyObject *o = PyBytes_FromStringAndSize(b->data ? b->data : "", (Py_ssize_t)b->len);
    PyMem_Free(b->data);
    b->data = NULL;
    return o;
}

/* the bytes gathered in small (if any) appended to pieces as one bytes object; small is
 * emptied (its buffer freed). -1 with an exception set on failure. */
static int flush_small(Buf *small, PyObject *pieces) {
    if (!small->len) return 0;
    PyObject *b = buf_bytes(small);
    small->len = small->cap = 0;
    if (!b) return -1;
    int rc = PyList_Append(pieces, b);
    Py_DECREF(b);
    return rc;
}

/* item i of seq, or seq[i].get(key) when key is given, or seq[i][key] when key is an int and
 * the items are tuples (borrowed or new ref in *owned) */
static PyObject *item_of(PyObject *fast, Py_ssize_t i, PyObject *key, PyObject **owned) {
    PyObject *it = PySequence_Fast_GET_ITEM(fast, i);
    *owned = NULL;
    if (key == NULL) return it;
    if (PyLong_CheckExact(key)) {
        Py_ssize_t k = PyLong_AsSsize_t(key);
        if (k == -1 && PyErr_Occurred()) return NULL;
        if (!PyTuple_Check(it) || k < 0 || k >= PyTuple_GET_SIZE(it)) {
            PyErr_SetString(PyExc_TypeError, "items must be tuples holding the field at the index given");
            return NULL;
        }
        return PyTuple_GET_ITEM(it, k);
    }
    if (!PyDict_Check(it)) {
        PyErr_SetString(PyExc_TypeError, "items must be dicts when a key is given");
        return NULL;
    }
    PyObject *v = PyDict_GetItemWithError(it, key);
    if (!v) {
        if (PyErr_Occurred()) return NULL;
        return Py_None;
    }
    return v;
}

/* string_column(seq, key=None) -> (validity or None, offsets int32 LE, data utf8, null_count) */
static PyObject *py_string_column(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *seq, *key = Py_None;
    if (!PyArg_ParseTuple(args, "O|O", &seq, &key)) return NULL;
    PyObject *fast = PySequence_Fast(seq, "a sequence is required");
    if (!fast) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    Buf offs = {0}, data = {0}, valid = {0};
    Py_ssize_t nulls = 0;
    if (buf_reserve(&offs, (size_t)(n + 1) * 4) < 0 || buf_reserve(&valid, (size_t)(n + 7) / 8) < 0) goto fail;
    memset(valid.data, 0, (size_t)(n + 7) / 8);
    valid.len = (size_t)(n + 7) / 8;
    int32_t off = 0;
    memcpy(offs.data, &off, 4);
    offs.len = 4;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *owned;
        PyObject *v = item_of(fast, i, key == Py_None ? NULL : key, &owned);
        if (!v) goto fail;
        if (v == Py_None) {
            nulls++;
        } else {
            Py_ssize_t sl;
            const char *sp = PyUnicode_AsUTF8AndSize(v, &sl);
            if (!sp) goto fail;
            if (buf_reserve(&data, (size_t)sl) < 0) goto fail;
            memcpy(data.data + data.len, sp, (size_t)sl);
            data.len += (size_t)sl;
            if (data.len > 0x7FFFFFFF) {
                PyErr_SetString(PyExc_OverflowError, "string column larger than 2 GiB");
                goto fail;
            }
            valid.data[i >> 3] |= (char)(1 << (i & 7));
        }
        off = (int32_t)data.len;
        memcpy(offs.data + offs.len, &off, 4);
        offs.len += 4;
    }
    Py_DECREF(fast);
    PyObject *vb = nulls ? buf_bytes(&valid) : (PyMem_Free(valid.data), Py_NewRef(Py_None));
    PyObject *ob = buf_bytes(&offs), *db = buf_bytes(&data);
    if (!vb || !ob || !db) {
        Py_XDECREF(vb);
        Py_XDECREF(ob);
        Py_XDECREF(db);
        return NULL;
    }
    return Py_BuildValue("(NNNn)", vb, ob, db, nulls);
fail:
    Py_DECREF(fast);
    PyMem_Free(offs.data);
    PyMem_Free(data.data);
    PyMem_Free(valid.data);
    return NULL;
}

/* int_column(seq, width, key=None) -> (validity or None, data LE, null_count); width 1,2,4,8 */
static PyObject *py_int_column(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *seq, *key = Py_None;
    int width;
    if (!PyArg_ParseTuple(args, "Oi|O", &seq, &width, &key)) return NULL;
    if (width != 1 && width != 2 && width != 4 && width != 8) {
        PyErr_SetString(PyExc_ValueError, "width must be 1, 2, 4 or 8");
        return NULL;
    }
    PyObject *fast = PySequence_Fast(seq, "a sequence is required");
    if (!fast) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    Buf data = {0}, valid = {0};
    Py_ssize_t nulls = 0;
    if (buf_reserve(&data, (size_t)n * (size_t)width + 1) < 0 || buf_reserve(&valid, (size_t)(n + 7) / 8 + 1) < 0)
        goto fail;
    memset(valid.data, 0, (size_t)(n + 7) / 8);
    valid.len = (size_t)(n + 7) / 8;
    data.len = (size_t)n * (size_t)width;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *owned;
        PyObject *v = item_of(fast, i, key == Py_None ? NULL : key, &owned);
        if (!v) goto fail;
        unsigned long long u = 0;
        if (v == Py_None) {
            nulls++;
        } else if (PyBool_Check(v)) {
            u = v == Py_True;
            valid.data[i >> 3] |= (char)(1 << (i & 7));
        } else {
            u = PyLong_AsUnsignedLongLongMask(v);
            if (u == (unsigned long long)-1 && PyErr_Occurred()) goto fail;
            valid.data[i >> 3] |= (char)(1 << (i & 7));
        }
        for (int b = 0; b < width; b++) data.data[(size_t)i * (size_t)width + (size_t)b] = (char)((u >> (8 * b)) & 0xFF);
    }
    Py_DECREF(fast);
    PyObject *vb = nulls ? buf_bytes(&valid) : (PyMem_Free(valid.data), Py_NewRef(Py_None));
    PyObject *db = buf_bytes(&data);
    if (!vb || !db) {
        Py_XDECREF(vb);
        Py_XDECREF(db);
        return NULL;
    }
    return Py_BuildValue("(NNn)", vb, db, nulls);
fail:
    Py_DECREF(fast);
    PyMem_Free(data.data);
    PyMem_Free(valid.data);
    return NULL;
}


/* ---- rewrite: the data set walk of rewrite.py's _Rewriter, explicit VR little endian ----
 *
 * rewrite(data, pos, edits, keep_type, sets, inserts, native, view_min, vr_for, private_vr) mirrors
 * _Rewriter.dataset / sequence / pixel_end for an explicit VR little endian data set
 * and returns (pieces, visited, kept, sop_class, sop_instance), or None whenever the
 * Python walker could decide otherwise or would raise (UN sequences, unknown VRs, truncation,
 * damage, nesting deeper than MAX_DEPTH): the caller then runs the Python walker, which
 * stays the reference. Nothing visible is changed before success: `visited` lists the
 * prefixes whose pending inserts were used (the caller pops them), `kept` the kept
 * sequences. pieces are bytes (small pieces joined) and (start, stop) ranges of data of
 * at least view_min bytes; their concatenation is the rewritten data set.
 */

enum { RW_BAIL = -1, RW_PYERR = -2 };
#define RW_INF ((Py_ssize_t)1 << 62)
#define RW_MAX_DEPTH 48
#define RW_MAX_PATH 1024

typedef struct {
    int kind; /* 0 range, 1 object (borrowed, kept alive by the sets dict), 2 literal */
    Py_ssize_t a, b;
    PyObject *obj;
    unsigned char lit[12];
    int litn;
} RPiece;

typedef struct {
    const unsigned char *d;
    Py_ssize_t size;
    PyObject *edits, *keep_type, *sets, *inserts;
    PyObject *vr_for, *private_vr; /* callables, for UN elements (as _Rewriter.un_is_sq) */
    PyObject *visited; /* set of prefixes whose inserts were taken */
    PyObject *kept;    /* list of kept sequence paths */
    int native;
    RPiece *p;
    Py_ssize_t np, cap;
    /* top-level group 0028 elements used by the pixel check: 0002 0008 0010 0011 0100 0004 */
    Py_ssize_t img_off[6], img_len[6];
    int img_set[6];
    Py_ssize_t sop_off[2], sop_len[2];
    int sop_set[2];
} R;

static int rw_push(R *r, int kind, Py_ssize_t a, Py_ssize_t b, PyObject *obj, const unsigned char *lit, int litn) {
    if (r->np == r->cap) {
        Py_ssize_t cap = r->cap ? r->cap * 2 : 64;
        RPiece *p = PyMem_Realloc(r->p, (size_t)cap * sizeof(RPiece));
        if (!p) {
            PyErr_NoMemory();
            return RW_PYERR;
        }
        r->p = p;
        r->cap = cap;
    }
    RPiece *q = &r->p[r->np++];
    q->kind = kind;
    q->a = a;
    q->b = b;
    q->obj = obj;
    q->litn = litn;
    if (litn) memcpy(q->lit, lit, (size_t)litn);
    return 0;
}

static const unsigned char RW_ITEM[8] = {0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF};
static const unsigned char RW_ITEM_END[8] = {0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0};
static const unsigned char RW_SEQ_END[8] = {0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0};

#define RW_FLUSH()                                                          \
    do {                                                                    \
        if (run >= 0) {                                                     \
            if (rw_push(r, 0, run, pos, NULL, NULL, 0) < 0) return RW_PYERR; \
            run = -1;                                                       \
        }                                                                   \
    } while (0)

/* the Set bytes of a path (prepared by rewrite.py), pushed */
static int rw_push_set(R *r, PyObject *path) {
    PyObject *b = PyDict_GetItemWithError(r->sets, path);
    if (!b) return PyErr_Occurred() ? RW_PYERR : RW_BAIL;
    if (!PyBytes_Check(b)) return RW_BAIL;
    return rw_push(r, 1, 0, PyBytes_GET_SIZE(b), b, NULL, 0);
}

static int rw_image_slot(uint16_t elem) {
    switch (elem) {
    case 0x0002: return 0;
    case 0x0008: return 1;
    case 0x0010: return 2;
    case 0x0011: return 3;
    case 0x0100: return 4;
    case 0x0004: return 5;
    default: return -1;
    }
}

/* us(): the first US value of a top-level group 0028 element, or dflt (-1: none) */
static long rw_us(R *r, int slot, long dflt) {
    if (!r->img_set[slot] || r->img_len[slot] < 2 || r->img_off[slot] + 2 > r->size) return dflt;
    return rd16(r->d + r->img_off[slot]);
}

/* PhotometricInterpretation is YBR_FULL_422 (padding and case as rewrite.py reads it) */
static int rw_ybr_422(R *r) {
    static const char want[] = "YBR_FULL_422";
    if (!r->img_set[5] || r->img_off[5] + r->img_len[5] > r->size) return 0;
    Py_ssize_t a = r->img_off[5], b = a + r->img_len[5];
    while (a < b && (r->d[a] == ' ' || r->d[a] == 0)) a++;
    while (b > a && (r->d[b - 1] == ' ' || r->d[b - 1] == 0)) b--;
    if (b - a != (Py_ssize_t)(sizeof want - 1)) return 0;
    for (Py_ssize_t i = 0; i < b - a; i++) {
        unsigned char c = r->d[a + i];
        if (c >= 'a' && c <= 'z') c = (unsigned char)(c - 'a' + 'A');
        if (c != (unsigned char)want[i]) return 0;
    }
    return 1;
}

/* expected native pixel bytes: >= 0, -1 unknown, RW_BAIL -> leave to Python */
static int rw_expected(R *r, uint64_t *out) {
    long rows = rw_us(r, 2, -1), cols = rw_us(r, 3, -1), bits = rw_us(r, 4, -1);
    if (rows <= 0 || cols <= 0 || bits <= 0) return -1; /* None or 0: unknown */
    long samples = rw_us(r, 0, 1);
    if (samples <= 0) samples = 1;
    uint64_t frames = 1;
    if (r->img_set[1]) {
        Py_ssize_t a = r->img_off[1], b = a + r->img_len[1];
        if (b > r->size) return RW_BAIL;
        while (a < b && (r->d[a] == ' ' || r->d[a] == 0)) a++;
        while (b > a && (r->d[b - 1] == ' ' || r->d[b - 1] == 0)) b--;
        if (a < b) {
            if (b - a > 9) return RW_BAIL;
            uint64_t v = 0;
            for (Py_ssize_t i = a; i < b; i++) {
                if (r->d[i] < '0' || r->d[i] > '9') return RW_BAIL; /* int() decides */
                v = v * 10 + (uint64_t)(r->d[i] - '0');
            }
            frames = v > 1 ? v : 1;
        } else {
            return RW_BAIL; /* int('') raises: Python decides */
        }
    }
    uint64_t n = 1, factors[5] = {(uint64_t)rows, (uint64_t)cols, (uint64_t)samples, frames, (uint64_t)bits};
    for (int i = 0; i < 5; i++) {
        if (factors[i] && n > (UINT64_MAX - 7) / factors[i]) return RW_BAIL; /* Python decides */
        n *= factors[i];
    }
    n = (n + 7) / 8;
    if (rw_ybr_422(r)) n = n / 3 * 2; /* two samples a pixel: Y Y Cb Cr for each pair (PS3.3 C.7.6.3.1.2) */
    *out = n + (n & 1);
    return 0;
}

static int rw_fragments_end(R *r, Py_ssize_t pos, Py_ssize_t *epos);

static int rw_pixel_end(R *r, Py_ssize_t vpos, uint32_t length, Py_ssize_t *epos) {
    if (length != UNDEFINED) {
        if (vpos + (Py_ssize_t)length > r->size) return RW_BAIL;
        if (r->native) {
            uint64_t expected;
            int e = rw_expected(r, &expected);
            if (e == RW_BAIL) return RW_BAIL;
            if (e == 0 && (uint64_t)length < expected) return RW_BAIL;
        }
        *epos = vpos + (Py_ssize_t)length;
        return 0;
    }
    return rw_fragments_end(r, vpos, epos);
}

/* End of encapsulated fragments (items up to the sequence delimiter); RW_BAIL when damaged. */
static int rw_fragments_end(R *r, Py_ssize_t pos, Py_ssize_t *epos) {
    for (;;) {
        if (pos + 8 > r->size) return RW_BAIL;
        uint32_t ftag = ((uint32_t)rd16(r->d + pos) << 16) | rd16(r->d + pos + 2);
        uint32_t flen = rd32(r->d + pos + 4);
        if (ftag == 0xFFFEE0DDu) {
            *epos = pos + 8;
            return 0;
        }
        if (ftag != 0xFFFEE000u || flen == UNDEFINED) return RW_BAIL;
        if (pos + 8 + (Py_ssize_t)flen > r->size) return RW_BAIL;
        pos += 8 + (Py_ssize_t)flen;
    }
}

static int rw_sequence(R *r, Py_ssize_t pos, uint32_t length, int depth, const char *path, Py_ssize_t plen,
                       int skip, Py_ssize_t *out_end);

#define RW_MAX_CREATORS 64
typedef struct {
    uint32_t key[RW_MAX_CREATORS];
    Py_ssize_t off[RW_MAX_CREATORS], len[RW_MAX_CREATORS];
    int n;
} Creators;

/* is a callable's answer the str "SQ"? 1, 0, or RW_PYERR */
static int rw_answer_is_sq(PyObject *answer) {
    if (!answer) return RW_PYERR;
    int is_sq = PyUnicode_Check(answer) && PyUnicode_CompareWithASCIIString(answer, "SQ") == 0;
    Py_DECREF(answer);
    return is_sq;
}

/* _Rewriter.un_is_sq for an explicit UN element of defined length: 1, 0, RW_BAIL or RW_PYERR */
static int rw_un_is_sq(R *r, uint16_t group, uint16_t elem, Creators *cr) {
    if (!(group & 1)) {
        if (!elem) return 0;
        return rw_answer_is_sq(PyObject_CallFunction(r->vr_for, "k", (unsigned long)(((uint32_t)group << 16) | elem)));
    }
    if (elem <= 0xFF) return 0;
    uint32_t key = ((uint32_t)group << 8) | (elem >> 8);
    for (int i = cr->n - 1; i >= 0; i--) {
        if (cr->key[i] != key) continue;
        Py_ssize_t a = cr->off[i], b = a + cr->len[i];
        if (b > r->size) return RW_BAIL;
        while (b > a && (r->d[b - 1] == ' ' || r->d[b - 1] == 0)) b--;
        while (a < b && (r->d[a] == ' ' || r->d[a] == 0)) a++;
        PyObject *creator = PyUnicode_DecodeLatin1((const char *)r->d + a, b - a, NULL);
        if (!creator) return RW_PYERR;
        return rw_answer_is_sq(PyObject_CallFunction(r->private_vr, "HHN", group, elem, creator));
    }
    return 0; /* no creator: not a sequence */
}

/* one data set: returns 1 changed, 0 unchanged, RW_BAIL or RW_PYERR; *io_pos in: start, out: end */
static int rw_dataset(R *r, Py_ssize_t pos, Py_ssize_t end, const char *prefix, Py_ssize_t plen, int depth, int skip,
                      Py_ssize_t *out_end) {
    const unsigned char *d = r->d;
    Py_ssize_t size = r->size;
    int top = depth == 0;
    int changed = 0, trailing = 0;
    Py_ssize_t run = -1;
    char path[RW_MAX_PATH];
    PyObject *pending = NULL; /* borrowed list of (tag, path), taken from the end */
    Py_ssize_t k = -1;
    uint32_t done[64];
    int ndone = 0;
    Creators creators;
    creators.n = 0;
    if (depth > RW_MAX_DEPTH || plen + 32 > RW_MAX_PATH) return RW_BAIL;
    memcpy(path, prefix, (size_t)plen);
    if (!skip) {
        PyObject *key = PyUnicode_FromStringAndSize(prefix, plen);
        if (!key) return RW_PYERR;
        int seen = PySet_Contains(r->visited, key);
        if (seen < 0) {
            Py_DECREF(key);
            return RW_PYERR;
        }
        if (!seen) {
            pending = PyDict_GetItemWithError(r->inserts, key);
            if (!pending && PyErr_Occurred()) {
                Py_DECREF(key);
                return RW_PYERR;
            }
            if (pending) {
                if (!PyList_Check(pending) || PySet_Add(r->visited, key) < 0) {
                    Py_DECREF(key);
                    return PyErr_Occurred() ? RW_PYERR : RW_BAIL;
                }
                k = PyList_GET_SIZE(pending) - 1;
                if (k >= 0) changed = 1;
            }
        }
        Py_DECREF(key);
    }
    while (pos < end) {
        if (pos + 8 > size) {
            if (top && end >= RW_INF) {
                if (pos >= size) break;
                int zero = 1;
                for (Py_ssize_t i = pos; i < size; i++)
                    if (d[i]) {
                        zero = 0;
                        break;
                    }
                if (zero) {
                    changed = 1;
                    RW_FLUSH();
                    pos = size;
                    break;
                }
            }
            return RW_BAIL;
        }
        uint16_t group = rd16(d + pos), elem = rd16(d + pos + 2);
        uint32_t tag = ((uint32_t)group << 16) | elem;
        if (group == 0xFFFE) {
            if (tag == 0xFFFEE00Du) {
                if (end >= RW_INF) {
                    RW_FLUSH();
                    if (top) changed = 1;
                    end = pos + 8;
                    pos = end;
                    break;
                }
                changed = 1;
            } else if (tag == 0xFFFEE0DDu && top) {
                changed = 1;
            } else {
                return RW_BAIL;
            }
            RW_FLUSH();
            pos += 8;
            continue;
        }
        int vi = vr_index_of(d + pos + 4);
        if (vi < 0) return RW_BAIL; /* unknown or blank VR: Python decides */
        int is_sq = VRS[vi].kind == K_SQ;
        uint32_t length;
        Py_ssize_t vpos;
        if (VRS[vi].long_form) {
            if (pos + 12 > size) return RW_BAIL;
            length = rd32(d + pos + 8);
            vpos = pos + 12;
        } else {
            length = rd16(d + pos + 6);
            vpos = pos + 8;
        }
        if (vi == VR_UN) {
            /* a UN sequence holds implicit VR items: the Python walker does those */
            if (length == UNDEFINED) return RW_BAIL;
            int un_sq = rw_un_is_sq(r, group, elem, &creators);
            if (un_sq != 0) return un_sq > 0 ? RW_BAIL : un_sq;
        }
        if ((group & 1) && elem >= 0x10 && elem <= 0xFF && length <= 0xFFFF) {
            uint32_t key = ((uint32_t)group << 8) | elem;
            int i;
            for (i = 0; i < creators.n && creators.key[i] != key; i++)
                ;
            if (i == creators.n) {
                if (creators.n == RW_MAX_CREATORS) return RW_BAIL;
                creators.n++;
            }
            creators.key[i] = key;
            creators.off[i] = vpos;
            creators.len[i] = length;
        }
        if (top) {
            if (group == 0x0028) {
                int slot = rw_image_slot(elem);
                if (slot >= 0) {
                    r->img_set[slot] = 1;
                    r->img_off[slot] = vpos;
                    r->img_len[slot] = length;
                }
            } else if (group == 0x0008 && (elem == 0x0016 || elem == 0x0018)) {
                int s = elem == 0x0016 ? 0 : 1;
                r->sop_set[s] = 1;
                r->sop_off[s] = vpos;
                r->sop_len[s] = length;
            }
        }
        PyObject *pathobj = NULL, *edit = NULL;
        Py_ssize_t pl = plen;
        /* past the top-level Pixel Data nothing is kept: the scan stops there, so no plan
         * row speaks for what follows (a copy of an earlier element would take its edit) */
        if (!(elem == 0 || skip || trailing || (top && group == 0x0002))) {
            snprintf(path + plen, 9, "%08X", tag);
            pl = plen + 8;
            pathobj = PyUnicode_FromStringAndSize(path, pl);
            if (!pathobj) return RW_PYERR;
            edit = PyDict_GetItemWithError(r->edits, pathobj);
            if (!edit && PyErr_Occurred()) goto pyerr;
        }
#define RW_FAIL(code)            \
    do {                         \
        Py_XDECREF(pathobj);     \
        return (code);           \
    } while (0)
        if (k >= 0) {
            while (k >= 0) {
                PyObject *t = PyList_GET_ITEM(pending, k);
                if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 2) RW_FAIL(RW_BAIL);
                unsigned long ins = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(t, 0));
                if (ins == (unsigned long)-1 && PyErr_Occurred()) RW_FAIL(RW_PYERR);
                if (ins >= tag) break;
                if (run >= 0) {
                    if (rw_push(r, 0, run, pos, NULL, NULL, 0) < 0) RW_FAIL(RW_PYERR);
                    run = -1;
                }
                int e = rw_push_set(r, PyTuple_GET_ITEM(t, 1));
                if (e < 0) RW_FAIL(e);
                if (ndone == 64) RW_FAIL(RW_BAIL);
                done[ndone++] = (uint32_t)ins;
                k--;
            }
            if (k >= 0) {
                PyObject *t = PyList_GET_ITEM(pending, k);
                unsigned long ins = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(t, 0));
                if (ins == (unsigned long)-1 && PyErr_Occurred()) RW_FAIL(RW_PYERR);
                if (ins == tag) k--;
            }
        }
        int keep = edit != NULL && (PyObject *)Py_TYPE(edit) == r->keep_type;
        int seq_changed = 0;
        Py_ssize_t epos;
        if (top && (tag == 0x7FE00010u || tag == 0x7FE00008u || tag == 0x7FE00009u)) {
            if (rw_pixel_end(r, vpos, length, &epos) < 0) RW_FAIL(RW_BAIL);
            trailing = 1;
        } else if (is_sq) {
            if (keep) {
                if (PyList_Append(r->kept, pathobj) < 0) RW_FAIL(RW_PYERR);
                if (run >= 0) { /* same bytes whether the run is split here or not */
                    if (rw_push(r, 0, run, pos, NULL, NULL, 0) < 0) RW_FAIL(RW_PYERR);
                    run = -1;
                }
                Py_ssize_t mark = r->np;
                unsigned char head[12];
                memcpy(head, d + pos, 4);
                memcpy(head + 4, "SQ\0\0\xff\xff\xff\xff", 8);
                if (rw_push(r, 2, 0, 0, NULL, head, 12) < 0) RW_FAIL(RW_PYERR);
                int c = rw_sequence(r, vpos, length, depth + 1, path, pl, 0, &epos);
                if (c < 0) RW_FAIL(c);
                if (c) {
                    if (rw_push(r, 2, 0, 0, NULL, RW_SEQ_END, 8) < 0) RW_FAIL(RW_PYERR);
                    seq_changed = 1;
                    changed = 1;
                } else {
                    r->np = mark;
                }
            } else {
                /* removed: walked all the same, so that its items must end where it says
                 * (a reader skipping it by its length would take an item's rest for elements) */
                Py_ssize_t mark = r->np;
                int c = rw_sequence(r, vpos, length, depth + 1, path, pl, 1, &epos);
                if (c < 0) RW_FAIL(c);
                r->np = mark;
            }
        } else if (length == UNDEFINED) {
            if (rw_fragments_end(r, vpos, &epos) < 0) RW_FAIL(RW_BAIL);
        } else {
            epos = vpos + (Py_ssize_t)length;
            if (epos > size) RW_FAIL(RW_BAIL);
        }
        if (keep) {
            if (!seq_changed && run < 0) run = pos;
        } else {
            if (run >= 0) {
                if (rw_push(r, 0, run, pos, NULL, NULL, 0) < 0) RW_FAIL(RW_PYERR);
                run = -1;
            }
            changed = 1;
            if (edit != NULL) {
                int seen = 0;
                for (int i = 0; i < ndone; i++)
                    if (done[i] == tag) seen = 1;
                if (!seen) {
                    int e = rw_push_set(r, pathobj);
                    if (e < 0) RW_FAIL(e);
                }
            }
        }
        Py_XDECREF(pathobj);
        pos = epos;
        continue;
    pyerr:
        Py_XDECREF(pathobj);
        return RW_PYERR;
#undef RW_FAIL
    }
    if (end < RW_INF && pos > end) return RW_BAIL;
    RW_FLUSH();
    while (k >= 0) {
        PyObject *t = PyList_GET_ITEM(pending, k);
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 2) return RW_BAIL;
        int e = rw_push_set(r, PyTuple_GET_ITEM(t, 1));
        if (e < 0) return e;
        k--;
    }
    *out_end = pos;
    return changed;
}

static int rw_sequence(R *r, Py_ssize_t pos, uint32_t length, int depth, const char *path, Py_ssize_t plen,
                       int skip, Py_ssize_t *out_end) {
    Py_ssize_t end = length == UNDEFINED ? RW_INF : pos + (Py_ssize_t)length;
    if (end < RW_INF && end > r->size) return RW_BAIL;
    if (plen + 32 > RW_MAX_PATH) return RW_BAIL;
    char prefix[RW_MAX_PATH];
    memcpy(prefix, path, (size_t)plen);
    int changed = 0;
    long n = 0;
    while (pos < end) {
        if (pos + 8 > r->size) return RW_BAIL;
        uint32_t itag = ((uint32_t)rd16(r->d + pos) << 16) | rd16(r->d + pos + 2);
        uint32_t ilen = rd32(r->d + pos + 4);
        if (itag == 0xFFFEE0DDu) {
            pos += 8;
            break;
        }
        if (itag != 0xFFFEE000u) return RW_BAIL;
        Py_ssize_t start = pos;
        pos += 8;
        int m = snprintf(prefix + plen, 24, "[%ld].", n);
        Py_ssize_t mark = r->np;
        if (rw_push(r, 2, 0, 0, NULL, RW_ITEM, 8) < 0) return RW_PYERR;
        int c;
        if (ilen == UNDEFINED) {
            c = rw_dataset(r, pos, RW_INF, prefix, plen + m, depth, skip, &pos);
        } else {
            Py_ssize_t ignored;
            c = rw_dataset(r, pos, pos + (Py_ssize_t)ilen, prefix, plen + m, depth, skip, &ignored);
            pos += (Py_ssize_t)ilen;
        }
        if (c < 0) return c;
        n++;
        if (skip) {
            r->np = mark;
            continue;
        }
        if (!c) {
            r->np = mark;
            if (rw_push(r, 0, start, pos, NULL, NULL, 0) < 0) return RW_PYERR;
        } else {
            if (rw_push(r, 2, 0, 0, NULL, RW_ITEM_END, 8) < 0) return RW_PYERR;
            changed = 1;
        }
    }
    /* items running past the sequence's own length: the Python walker says why */
    if (end < RW_INF && pos != end) return RW_BAIL;
    *out_end = pos;
    return changed;
}

static PyObject *rw_span(R *r, int which) {
    if (!r->sop_set[which]) Py_RETURN_NONE;
    return Py_BuildValue("(nn)", r->sop_off[which], r->sop_len[which]);
}

static PyObject *py_rewrite(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer view;
    Py_ssize_t pos, view_min;
    int native;
    R r;
    memset(&r, 0, sizeof r);
    if (!PyArg_ParseTuple(args, "y*nO!OO!O!pnOO", &view, &pos, &PyDict_Type, &r.edits, &r.keep_type, &PyDict_Type,
                          &r.sets, &PyDict_Type, &r.inserts, &native, &view_min, &r.vr_for, &r.private_vr))
        return NULL;
    PyObject *result = NULL, *pieces = NULL;
    Buf small = {NULL, 0, 0};
    r.d = view.buf;
    r.size = view.len;
    r.native = native;
    r.visited = PySet_New(NULL);
    r.kept = PyList_New(0);
    if (!r.visited || !r.kept) goto done;
    if (pos < 0 || pos > r.size) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    Py_ssize_t end;
    int c = rw_dataset(&r, pos, RW_INF, "", 0, 0, 0, &end);
    if (c == RW_PYERR) goto done;
    if (c == RW_BAIL) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    if (c == 0) {
        r.np = 0;
        if (rw_push(&r, 0, pos, end, NULL, NULL, 0) < 0) goto done;
    }
    pieces = PyList_New(0);
    if (!pieces) goto done;
    for (Py_ssize_t i = 0; i < r.np; i++) {
        RPiece *q = &r.p[i];
        const char *src;
        Py_ssize_t n;
        if (q->kind == 0) {
            n = q->b - q->a;
            if (n >= view_min) {
                if (flush_small(&small, pieces) < 0) goto done;
                PyObject *span = Py_BuildValue("(nn)", q->a, q->b);
                if (!span || PyList_Append(pieces, span) < 0) {
                    Py_XDECREF(span);
                    goto done;
                }
                Py_DECREF(span);
                continue;
            }
            src = (const char *)r.d + q->a;
        } else if (q->kind == 1) {
            src = PyBytes_AS_STRING(q->obj);
            n = PyBytes_GET_SIZE(q->obj);
        } else {
            src = (const char *)q->lit;
            n = q->litn;
        }
        if (n > 0) {
            if (buf_reserve(&small, (size_t)n) < 0) goto done;
            memcpy(small.data + small.len, src, (size_t)n);
            small.len += (size_t)n;
        }
    }
    if (flush_small(&small, pieces) < 0) goto done;
    {
        PyObject *visited = PySequence_List(r.visited);
        if (!visited) goto done;
        result = Py_BuildValue("(NnNONN)", pieces, end, visited, r.kept, rw_span(&r, 0), rw_span(&r, 1));
        pieces = NULL;
    }
done:
    Py_XDECREF(pieces);
    Py_XDECREF(r.visited);
    Py_XDECREF(r.kept);
    PyMem_Free(small.data);
    PyMem_Free(r.p);
    PyBuffer_Release(&view);
    return result;
}


/* ---- make_files: empty files made ahead for the writers (see apply.TmpFiles) ----
 * make_files(prefix, start, count) creates prefix + "<i>.ahead" for i in start..start+count-1
 * (O_CREAT | O_EXCL, mode 0666 minus umask) without holding the GIL; returns how many
 * were made (fewer on the first error, which is not raised: the writers make their own). */
#ifndef _WIN32
#include <fcntl.h>
#include <unistd.h>
#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif
#endif

static PyObject *py_make_files(PyObject *Py_UNUSED(self), PyObject *args) {
    const char *prefix;
    Py_ssize_t plen, start, count, made = 0;
    if (!PyArg_ParseTuple(args, "s#nn", &prefix, &plen, &start, &count)) return NULL;
#ifdef _WIN32
    return PyLong_FromSsize_t(0); /* the writers make their own */
#endif
    if (plen > 3900 || start < 0 || count < 0) return PyLong_FromSsize_t(0);
    char path[4096];
    memcpy(path, prefix, (size_t)plen);
#ifndef _WIN32
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = start; i < start + count; i++) {
        snprintf(path + plen, sizeof path - (size_t)plen, "%zd.ahead", i);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0) break;
        close(fd);
        made++;
    }
    Py_END_ALLOW_THREADS
#endif
    return PyLong_FromSsize_t(made);
}

/* ---- prepare_sets: the common case of rewrite._prepare_sets ----
 * prepare_sets(edits, keep_type, set_type, paths, encoded, explicit, e, sets, inserts) walks the
 * edits in order and does, for each top-level Set of a str value whose path is in ``paths``
 * (rewrite._PATHS, with what == 0) and whose element is in ``encoded`` (rewrite._ENCODED, key
 * (tag, vr, value, explicit, e)), what _prepare_sets does: sets[path] = the bytes, and
 * (tag, path) appended to inserts[""]. Keep edits are skipped. Every other edit is returned,
 * as (path, edit) in edits order, for _prepare_sets to do: none of those done here can fail. */
static PyObject *S_VR, *S_VALUE;

static PyObject *py_prepare_sets(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *edits, *keep_type, *set_type, *paths, *encoded, *explicit, *e, *sets, *inserts;
    if (!PyArg_ParseTuple(args, "O!OOO!O!OOO!O!", &PyDict_Type, &edits, &keep_type, &set_type, &PyDict_Type, &paths,
                          &PyDict_Type, &encoded, &explicit, &e, &PyDict_Type, &sets, &PyDict_Type, &inserts))
        return NULL;
    PyObject *rest = PyList_New(0);
    if (!rest) return NULL;
    PyObject *top = NULL; /* borrowed: inserts[""] */
    Py_ssize_t pos = 0;
    PyObject *path, *edit;
    while (PyDict_Next(edits, &pos, &path, &edit)) {
        if ((PyObject *)Py_TYPE(edit) == keep_type) continue;
        int done = 0;
        if ((PyObject *)Py_TYPE(edit) == set_type && PyUnicode_CheckExact(path)) {
            PyObject *known = PyDict_GetItemWithError(paths, path);
            if (!known && PyErr_Occurred()) goto fail;
            if (known && PyTuple_CheckExact(known) && PyTuple_GET_SIZE(known) == 4) {
                PyObject *prefix = PyTuple_GET_ITEM(known, 0), *what = PyTuple_GET_ITEM(known, 2);
                if (PyUnicode_CheckExact(prefix) && PyUnicode_GET_LENGTH(prefix) == 0 && PyLong_CheckExact(what) &&
                    PyLong_AsLong(what) == 0) {
                    PyObject *vr = PyObject_GetAttr(edit, S_VR);
                    if (!vr) goto fail;
                    PyObject *value = PyObject_GetAttr(edit, S_VALUE);
                    if (!value) {
                        Py_DECREF(vr);
                        goto fail;
                    }
                    if (PyUnicode_CheckExact(value)) {
                        PyObject *key = PyTuple_Pack(5, PyTuple_GET_ITEM(known, 1), vr, value, explicit, e);
                        PyObject *bytes = key ? PyDict_GetItemWithError(encoded, key) : NULL;
                        Py_XDECREF(key);
                        if (!bytes && PyErr_Occurred()) {
                            Py_DECREF(vr);
                            Py_DECREF(value);
                            goto fail;
                        }
                        if (bytes) {
                            if (!top) {
                                top = PyDict_GetItemWithError(inserts, EMPTY_STR);
                                if (!top) {
                                    if (PyErr_Occurred()) {
                                        Py_DECREF(vr);
                                        Py_DECREF(value);
                                        goto fail;
                                    }
                                    PyObject *list = PyList_New(0);
                                    if (!list || PyDict_SetItem(inserts, EMPTY_STR, list) < 0) {
                                        Py_XDECREF(list);
                                        Py_DECREF(vr);
                                        Py_DECREF(value);
                                        goto fail;
                                    }
                                    Py_DECREF(list); /* the dict holds it */
                                    top = list;
                                }
                                if (!PyList_Check(top)) {
                                    PyErr_SetString(PyExc_TypeError, "inserts[''] is not a list");
                                    Py_DECREF(vr);
                                    Py_DECREF(value);
                                    goto fail;
                                }
                            }
                            if (PyDict_SetItem(sets, path, bytes) < 0 || PyList_Append(top, PyTuple_GET_ITEM(known, 3)) < 0) {
                                Py_DECREF(vr);
                                Py_DECREF(value);
                                goto fail;
                            }
                            done = 1;
                        }
                    }
                    Py_DECREF(vr);
                    Py_DECREF(value);
                } else if (PyErr_Occurred()) {
                    goto fail;
                }
            }
        }
        if (!done) {
            PyObject *pair = PyTuple_Pack(2, path, edit);
            if (!pair || PyList_Append(rest, pair) < 0) {
                Py_XDECREF(pair);
                goto fail;
            }
            Py_DECREF(pair);
        }
    }
    return rest;
fail:
    Py_DECREF(rest);
    return NULL;
}

static PyMethodDef methods[] = {
    {"walk", (PyCFunction)(void (*)(void))py_walk, METH_VARARGS | METH_KEYWORDS,
     "Walk a little-endian dataset into rows (see _parse.py)."},
    {"string_column", py_string_column, METH_VARARGS,
     "Arrow string buffers (validity, offsets, data, null_count) of a sequence of str/None (or of "
     "item.get(key) of dicts, or item[key] of tuples when key is an int)."},
    {"rewrite", py_rewrite, METH_VARARGS,
     "The rewritten pieces of an explicit VR little endian data set, or None (see rewrite.py)."},
    {"make_files", py_make_files, METH_VARARGS,
     "Create empty files prefix + '<i>.ahead' without the GIL; return how many were made."},
    {"int_column", py_int_column, METH_VARARGS,
     "Arrow fixed-width integer buffers (validity, data, null_count) of a sequence of int/bool/None."},
    {"prepare_sets", py_prepare_sets, METH_VARARGS,
     "The common case of rewrite._prepare_sets; returns the (path, edit) pairs left to it."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_cwalk", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__cwalk(void) {
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    memset(VR_INDEX, -1, sizeof VR_INDEX);
    for (int i = 0; i < N_VRS; i++) {
        VRS[i].str = PyUnicode_InternFromString(VRS[i].name);
        if (!VRS[i].str) return NULL;
        VR_INDEX[(VRS[i].name[0] - 'A') * 26 + (VRS[i].name[1] - 'A')] = (signed char)i;
    }
    VR_UN = VR_INDEX[('U' - 'A') * 26 + ('N' - 'A')];
    VR_SQ = VR_INDEX[('S' - 'A') * 26 + ('Q' - 'A')];
    VR_US = VR_INDEX[('U' - 'A') * 26 + ('S' - 'A')];
    VR_SS = VR_INDEX[('S' - 'A') * 26 + ('S' - 'A')];
    VR_UL = VR_INDEX[('U' - 'A') * 26 + ('L' - 'A')];
    VR_LO = VR_INDEX[('L' - 'A') * 26 + ('O' - 'A')];
    VR_OW = VR_INDEX[('O' - 'A') * 26 + ('W' - 'A')];
    EMPTY_STR = PyUnicode_FromString("");
    if (!EMPTY_STR) return NULL;
    S_VR = PyUnicode_InternFromString("vr");
    S_VALUE = PyUnicode_InternFromString("value");
    if (!S_VR || !S_VALUE) return NULL;
    WalkError = PyErr_NewException("dicomframe._cwalk.WalkError", NULL, NULL);
    if (!WalkError) return NULL;
    Py_INCREF(WalkError);
    if (PyModule_AddObject(m, "WalkError", WalkError) < 0) return NULL;
    PyModule_AddIntConstant(m, "CODE_NEED", CODE_NEED);
    PyModule_AddIntConstant(m, "CODE_TRUNCATED", CODE_TRUNCATED);
    PyModule_AddIntConstant(m, "CODE_CORRUPT", CODE_CORRUPT);
    PyModule_AddIntConstant(m, "CODE_UNSUPPORTED", CODE_UNSUPPORTED);
    return m;
}
