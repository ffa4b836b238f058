"""Task libraries built on rnnkit layers, text pipeline and trainer."""
