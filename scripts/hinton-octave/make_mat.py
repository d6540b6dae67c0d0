# Writes MNIST in the layout of Hinton's mnistdata.mat (batchdata 100x784x500 and so on) from the
# project's idx files, so that his ffnew.m can be timed beside ffstream. Usage: make_mat.py DATA_DIR OUT.mat
import gzip, sys, numpy as np, scipy.io
d = sys.argv[1]
def images(name):
    raw = gzip.open(f"{d}/mnist/{name}", "rb").read()
    return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 784).astype(np.float32) / 255.0
def labels(name):
    raw = gzip.open(f"{d}/mnist/{name}", "rb").read()
    return np.frombuffer(raw, np.uint8, offset=8)
def batches(x, y):
    n = len(x) // 100
    data = x[: n * 100].reshape(n, 100, 784).transpose(1, 2, 0)
    t = np.eye(10, dtype=np.float32)[y[: n * 100]].reshape(n, 100, 10).transpose(1, 2, 0)
    return np.ascontiguousarray(data), np.ascontiguousarray(t)
xtr, ytr = images("train-images-idx3-ubyte.gz"), labels("train-labels-idx1-ubyte.gz")
xte, yte = images("t10k-images-idx3-ubyte.gz"), labels("t10k-labels-idx1-ubyte.gz")
b, bt = batches(xtr[:50000], ytr[:50000])
v, vt = batches(xtr[50000:], ytr[50000:])
f, ft = batches(xte, yte)
scipy.io.savemat(sys.argv[2], dict(batchdata=b, batchtargets=bt, validbatchdata=v, validbatchtargets=vt,
                                   finaltestbatchdata=f, finaltestbatchtargets=ft))
print(b.shape, v.shape, f.shape)
