#!/usr/bin/env python3
"""The founding document's Keras CIFAR-10 program (TensorFlow CPU), with
flags to limit data and threads; prints per-epoch figures and, with --json,
one JSON line: images_per_sec is the last epoch's training throughput.

    pip install tensorflow-cpu
    python3 benches/peers/train_keras.py --epochs 10
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cifar_data  # noqa: E402

args = cifar_data.arg_parser(__doc__).parse_args()

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402
from tensorflow.keras import layers, models  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(args.threads)
tf.config.threading.set_inter_op_parallelism_threads(args.threads)

xtr, ytr, xte, yte = cifar_data.load_for(args)
xtr, xte = xtr / 255.0, xte / 255.0

model = models.Sequential([
    layers.Input((32, 32, 3)),
    layers.Conv2D(32, (3, 3), activation="relu"),
    layers.MaxPooling2D((2, 2)),
    layers.Conv2D(64, (3, 3), activation="relu"),
    layers.MaxPooling2D((2, 2)),
    layers.Conv2D(64, (3, 3), activation="relu"),
    layers.Flatten(),
    layers.Dense(64, activation="relu"),
    layers.Dense(10),
])
model.compile(optimizer="adam",
              loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])


class Timer(tf.keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.t


timer = Timer()
start = time.perf_counter()
hist = model.fit(xtr, ytr, epochs=args.epochs, batch_size=args.batch, callbacks=[timer],
                 verbose=0 if args.json else 2)
total = time.perf_counter() - start
_, acc = model.evaluate(xte, yte, verbose=0)
result = {"peer": "keras", "tensorflow": tf.__version__, "threads": args.threads, "epochs": args.epochs,
          "train_loss": hist.history["loss"][-1], "test_accuracy": acc,
          "images_per_sec": len(xtr) / timer.seconds, "seconds": total}
print(json.dumps(result) if args.json else result)
