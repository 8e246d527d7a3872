"""The course side: convolution and pooling lessons (imgclf viz) and the bundled demo."""
