"""Codecs: bit packing, sparse relative index, Huffman, ANS, float byte planes (Deep Compression, Han et al. 2016)."""
