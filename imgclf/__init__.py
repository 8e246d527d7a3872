"""imgclf: image classification with convolutional networks.

    import imgclf
    clf = imgclf.train("data/food", model="cnn", epochs=10)
    clf.evaluate("data/food-test"); clf.predict(["a.jpg"], top_k=3)
    clf = imgclf.load("runs/food")
"""
__version__ = "0.1.0"

from .api import load, train  # noqa: E402
from .classifier import Classifier  # noqa: E402
from .config import TrainConfig  # noqa: E402
from .errors import UserError  # noqa: E402
from .models import create_model  # noqa: E402
from .train import callbacks  # noqa: E402

__all__ = ["Classifier", "TrainConfig", "UserError", "callbacks", "create_model", "load", "train", "__version__"]
