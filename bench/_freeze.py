"""Imported last by the fork server (bench.worker.PRELOAD): move every object the preloaded modules
created into the garbage collector's permanent generation, so that no worker forked from the
server scans them again (a full collection over TVM's and ONNX's module objects costs a worker
about 0.1 s) and collections do not touch, hence copy, the pages the workers share."""

import gc

gc.collect()
gc.freeze()
