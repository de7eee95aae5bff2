"""cifarlab: the training core behind the lab notebook and ``labctl run-lab``.

It never imports labctl: it is what runs on the lab machine. Needs torch, numpy and Pillow; torchvision for the
CIFAR-10 download and the faster JPEG decoder, nbclient only to run the notebook (matplotlib only for its plots).
"""

from __future__ import annotations

from cifarlab.config import ConfigError as ConfigError
from cifarlab.config import LabError as LabError
from cifarlab.config import TrainConfig as TrainConfig
from cifarlab.data import Data as Data
from cifarlab.data import Split as Split
from cifarlab.data import load_data as load_data
from cifarlab.data import sample as sample
from cifarlab.runlog import per_class_table as per_class_table
from cifarlab.train import train as train

__version__ = "0.1.0"
