"""Training the demo tool classifier: the [CLS] path of MiniLM's last layer on cached features.

The classifier reads only the [CLS] vector of the last encoder layer (through BERT's pooler). That
vector depends on the last layer's input at [CLS] and on the keys and values of every token. So the
first five layers and the last layer's key/value projections stay frozen, their outputs are
computed once per example, and training updates everything else on the [CLS] path: the last
layer's query, attention output, feed-forward and layer norms, the pooler and the classifier. One
encoder pass over the data, then cheap epochs; the saved model is a plain
`BertForSequenceClassification` whose outputs equal what was trained (`check_cached_path`).

All functions take the model and tensors explicitly and import torch themselves, so importing this
module stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..tool import Rendered, ToolClassifier

#: The trainable parameters: the last layer except its key/value projections, the pooler, the head.
_FROZEN_IN_LAST_LAYER = ("attention.self.key.", "attention.self.value.")


@dataclass(frozen=True)
class Cached:
    """Frozen features of N examples: the last layer's input at [CLS], its keys/values, the mask."""

    cls_in: Any  # [N, hidden]
    keys: Any  # [N, heads, length, head_size]
    values: Any  # [N, heads, length, head_size]
    mask: Any  # [N, length], 1 for real tokens

    def take(self, index: Any) -> Cached:
        return Cached(self.cls_in[index], self.keys[index], self.values[index], self.mask[index])


def cache_features(model: Any, inputs: Sequence[Rendered], *, batch: int = 64) -> Cached:
    """Run the frozen part once per distinct input: length-sorted batches, padded to the longest input overall.

    `inputs` are what the server feeds the model (`ToolClassifier.render`: ids and segment ids).
    Repeated inputs (a step whose history the budget drops, the same opening of two conversations)
    are encoded once and share their features.
    """
    import torch

    distinct = dict.fromkeys(inputs)
    if len(distinct) < len(inputs):
        position = {item: i for i, item in enumerate(distinct)}
        return cache_features(model, list(distinct), batch=batch).take(
            torch.tensor([position[item] for item in inputs])
        )
    layers = model.bert.encoder.layer
    last = layers[-1].attention.self
    heads, size = last.num_attention_heads, last.attention_head_size
    width = max(len(item.ids) for item in inputs)
    count = len(inputs)
    cls_in = torch.zeros(count, model.config.hidden_size)
    keys = torch.zeros(count, heads, width, size)
    values = torch.zeros(count, heads, width, size)
    mask = torch.zeros(count, width)
    order = sorted(range(count), key=lambda i: len(inputs[i].ids))
    model.bert.encoder.layer = layers[:-1]
    try:
        with torch.inference_mode():
            for start in range(0, count, batch):
                index = order[start : start + batch]
                longest = max(len(inputs[i].ids) for i in index)
                ids = torch.tensor([[*inputs[i].ids] + [0] * (longest - len(inputs[i].ids)) for i in index])
                types = torch.tensor([[*inputs[i].type_ids] + [0] * (longest - len(inputs[i].ids)) for i in index])
                attention = (
                    torch.arange(longest)[None, :] < torch.tensor([len(inputs[i].ids) for i in index])[:, None]
                ).long()
                hidden = model.bert(input_ids=ids, attention_mask=attention, token_type_ids=types).last_hidden_state
                where = torch.tensor(index)
                cls_in[where] = hidden[:, 0]
                keys[where, :, :longest] = last.key(hidden).view(len(index), longest, heads, size).transpose(1, 2)
                values[where, :, :longest] = last.value(hidden).view(len(index), longest, heads, size).transpose(1, 2)
                mask[where, :longest] = attention.float()
    finally:
        model.bert.encoder.layer = layers
    return Cached(cls_in, keys, values, mask)


def cls_logits(model: Any, cached: Cached) -> Any:
    """The classifier's logits from cached features, computed with the model's own modules (eval mode)."""
    import torch

    layer = model.bert.encoder.layer[-1]
    attention = layer.attention.self
    heads, size = attention.num_attention_heads, attention.attention_head_size
    query = attention.query(cached.cls_in).view(-1, heads, 1, size)
    scores = (query @ cached.keys.transpose(-1, -2)) * attention.scaling  # [N, heads, 1, length]
    scores = scores.masked_fill(cached.mask[:, None, None, :] == 0, torch.finfo(scores.dtype).min)
    context = (scores.softmax(-1) @ cached.values).reshape(-1, heads * size)
    attended = layer.attention.output.LayerNorm(layer.attention.output.dense(context) + cached.cls_in)
    hidden = layer.output.LayerNorm(layer.output.dense(layer.intermediate(attended)) + attended)
    return model.classifier(model.bert.pooler(hidden[:, None, :]))


def trainable_parameters(model: Any) -> list[Any]:
    """The parameters on the [CLS] path that training updates (see the module docstring)."""
    last = len(model.bert.encoder.layer) - 1
    prefix = f"bert.encoder.layer.{last}."
    chosen = []
    for name, parameter in model.named_parameters():
        on_path = name.startswith(prefix) or name.startswith(("bert.pooler.", "classifier."))
        frozen = name.startswith(prefix) and name[len(prefix) :].startswith(_FROZEN_IN_LAST_LAYER)
        parameter.requires_grad_(on_path and not frozen)
        if on_path and not frozen:
            chosen.append(parameter)
    return chosen


def start_from_mean_pooling(model: Any) -> None:
    """Zero the last layer's query: [CLS] then attends evenly to every token, i.e. starts from the mean
    pooling all-MiniLM-L6-v2 was trained for (its [CLS] vector alone was never trained as a summary)."""
    import torch

    query = model.bert.encoder.layer[-1].attention.self.query
    with torch.no_grad():
        query.weight.zero_()
        query.bias.zero_()


def train(model: Any, cached: Cached, labels: Any, *, epochs: int, lr: float, seed: int, weights: Any = None) -> None:
    """AdamW on the [CLS] path, minibatches of 32, a cosine schedule; dropout stays off (eval mode)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    parameters = trainable_parameters(model)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.01)
    steps = epochs * math.ceil(len(labels) / 32)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    model.eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is faster, and much faster on a busy machine
    try:
        _epochs(model, cached, labels, optimizer, schedule, generator, epochs=epochs, weights=weights)
    finally:
        torch.set_num_threads(threads)
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def _epochs(
    model: Any, cached: Cached, labels: Any, optimizer: Any, schedule: Any, generator: Any, *, epochs: int, weights: Any
) -> None:
    import torch

    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order), 32):
            index = order[start : start + 32]
            loss = torch.nn.functional.cross_entropy(
                cls_logits(model, cached.take(index)), labels[index], weight=weights, label_smoothing=0.05
            )
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            schedule.step()


def margins(model: Any, cached: Cached) -> Any:
    """Positive-minus-negative logit per example (the log-odds the softmax turns into a probability)."""
    import torch

    with torch.inference_mode():
        logits = cls_logits(model, cached)
    return (logits[:, 1] - logits[:, 0]).clone()


def fit_platt(margin: Any, labels: Any, *, steps: int = 300) -> tuple[float, float]:
    """Platt scaling: (scale, shift) so that sigmoid(scale * margin + shift) is calibrated on these rows."""
    import torch

    scale = torch.ones((), requires_grad=True)
    shift = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([scale, shift], max_iter=steps, line_search_fn="strong_wolfe")
    target = labels.float()

    def closure() -> Any:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(scale * margin + shift, target)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(scale.detach()), float(shift.detach())


def fold_into_head(model: Any, scale: float, shift: float) -> None:
    """Make the saved head's margin `scale * margin + shift`, so its softmax is the calibrated probability."""
    import torch

    with torch.no_grad():
        weight, bias = model.classifier.weight, model.classifier.bias
        weight.mul_(scale)
        bias.mul_(scale)
        bias[1] += shift / 2
        bias[0] -= shift / 2


def check_cached_path(
    classifier: ToolClassifier, inputs: Sequence[Rendered], cached: Cached, *, atol: float = 1e-3
) -> float:
    """The largest gap between the served model's logits (`classifier`'s own batching of `inputs`) and the
    cached path's; raises past `atol`."""
    import torch

    model = classifier.model
    with torch.inference_mode():
        full = torch.cat([model(**classifier.model_inputs([item])).logits for item in inputs])
        fast = cls_logits(model, cached)
    gap = float((full - fast).abs().max())
    if gap > atol:
        raise RuntimeError(f"the trained [CLS] path disagrees with the full model by {gap:.4g}")
    return gap
