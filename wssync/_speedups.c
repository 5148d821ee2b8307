/* Optional compiled helper for wssync: WebSocket (un)masking.
 *
 * XOR of a buffer with a repeated 4-byte key, 8 bytes at a time.  Built only
 * where a C compiler exists; wssync.websocket_frames falls back to its pure
 * Python version otherwise and gives the same results.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static PyObject *
apply_mask(PyObject *self, PyObject *args)
{
    Py_buffer data, mask;
    if (!PyArg_ParseTuple(args, "y*y*:apply_mask", &data, &mask))
        return NULL;
    if (mask.len != 4) {
        PyBuffer_Release(&data);
        PyBuffer_Release(&mask);
        PyErr_SetString(PyExc_ValueError, "mask must be 4 bytes");
        return NULL;
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result != NULL) {
        const unsigned char *in = (const unsigned char *)data.buf;
        const unsigned char *key = (const unsigned char *)mask.buf;
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
        Py_ssize_t n = data.len, i = 0;
        uint64_t key8;
        unsigned char k[8];
        memcpy(k, key, 4);
        memcpy(k + 4, key, 4);
        memcpy(&key8, k, 8);
        for (; i + 8 <= n; i += 8) {
            uint64_t chunk;
            memcpy(&chunk, in + i, 8);
            chunk ^= key8;
            memcpy(out + i, &chunk, 8);
        }
        for (; i < n; i++)
            out[i] = in[i] ^ key[i & 3];
    }
    PyBuffer_Release(&data);
    PyBuffer_Release(&mask);
    return result;
}

static PyMethodDef methods[] = {
    {"apply_mask", apply_mask, METH_VARARGS,
     "apply_mask(data, mask) -> bytes: XOR data with the repeated 4-byte mask."},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "wssync._speedups", NULL, -1, methods
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
