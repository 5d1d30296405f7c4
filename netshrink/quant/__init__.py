"""Parameter quantization: uniform int2..int8 / fp16 / bf16 (post-training and quantization-aware),
GPTQ, AWQ and SmoothQuant on calibration data, weight clustering with trainable shared centroids,
binary weights, and ONNX Runtime int8 export."""

from netshrink.quant.awq import AWQ
from netshrink.quant.binary import Binarize, binarize_
from netshrink.quant.bit_plan import bit_sensitivity, layer_weights, plan_bits
from netshrink.quant.calibration import Grid, calibrate
from netshrink.quant.cluster import Cluster, SharedWeights, centroids, cluster_
from netshrink.quant.gptq import GPTQ
from netshrink.quant.kmeans1d import Clustering, kmeans_1d
from netshrink.quant.layers import QUANTIZABLE_LAYERS
from netshrink.quant.smoothquant import SmoothQuant
from netshrink.quant.uniform import Quantize, quantize_

__all__ = ["AWQ", "GPTQ", "QUANTIZABLE_LAYERS", "Binarize", "Cluster", "Clustering", "Grid", "Quantize",
           "SharedWeights", "SmoothQuant", "binarize_", "bit_sensitivity", "calibrate", "centroids", "cluster_",
           "kmeans_1d", "layer_weights", "plan_bits", "quantize_"]
