"""The train Dice and IoU: counted from the training batches' thresholded logits."""

import torch
from sklearn.metrics import f1_score, jaccard_score
from torch import nn

from segflow.tasks.train.steps import CountingLoss


def test_binary_scores_match_scikit_learn_over_the_batches():
    torch.manual_seed(0)
    counting = CountingLoss(nn.BCEWithLogitsLoss())
    batches = [(torch.randn(4, 1, 8, 8), (torch.rand(4, 1, 8, 8) > 0.6).float()) for _ in "ab"]
    for logits, targets in batches:
        loss = counting(logits, targets)
        assert loss == nn.BCEWithLogitsLoss()(logits, targets)  # the loss is unchanged
    pred = torch.cat([logits for logits, _ in batches]).flatten() > 0
    true = torch.cat([targets for _, targets in batches]).flatten() > 0.5
    dice, iou = counting.scores()
    assert abs(dice - f1_score(true, pred)) < 1e-12
    assert abs(iou - jaccard_score(true, pred)) < 1e-12
    assert counting.scores() == (None, None)  # counted again from the next epoch's batches


def test_multiclass_scores_are_the_mean_over_foreground_classes():
    torch.manual_seed(1)
    counting = CountingLoss(nn.CrossEntropyLoss())
    logits, targets = torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4, 8, 8))
    counting(logits, targets)
    pred, true = logits.argmax(1).flatten(), targets.flatten()
    dice, iou = counting.scores()
    assert abs(dice - f1_score(true, pred, average=None)[1:].mean()) < 1e-12
    assert abs(iou - jaccard_score(true, pred, average=None)[1:].mean()) < 1e-12
