"""Plots (matplotlib, written as PNG files): training curves, data, evaluation."""
from .data import plot_augmentation, plot_class_counts, plot_data_overview, plot_samples
from .evaluation import (plot_confusion_matrix, plot_most_confused, plot_per_class, plot_pr_curves, plot_roc_pr,
                         plot_top_losses)
from .training import plot_comparison, plot_curves

__all__ = ["plot_augmentation", "plot_class_counts", "plot_comparison", "plot_confusion_matrix", "plot_curves",
           "plot_data_overview", "plot_most_confused", "plot_per_class", "plot_pr_curves", "plot_roc_pr",
           "plot_samples", "plot_top_losses"]
