"""Training the demo tool classifier: MiniLM's top layers on cached features.

The classifier reads only the [CLS] vector of the last encoder layer (through BERT's pooler). The
lower layers stay frozen: their output for every token (the input of the first trained layer) is
computed once per example, and training updates every parameter of the top `top` layers, the
pooler and the classifier. The trained layers see every token, so they can learn to weigh the
earlier turns against the newest utterance; the last one is evaluated on its [CLS] path only (its
keys and values over every token, its query, attention output and feed-forward at [CLS]). One
encoder pass over the data, then epochs that cost about one layer pass each; the saved model is a
plain `BertForSequenceClassification` whose outputs equal what was trained (`check_cached_path`).

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

#: Examples per optimiser step.
BATCH = 32


@dataclass(frozen=True)
class Cached:
    """Frozen features of N examples: the input of the first trained layer for every token, the mask."""

    hidden: Any  # [N, length, hidden]
    mask: Any  # [N, length], 1 for real tokens
    lengths: Any  # [N]

    def take(self, index: Any) -> Cached:
        return Cached(self.hidden[index], self.mask[index], self.lengths[index])


def cache_features(model: Any, inputs: Sequence[Rendered], *, top: int, batch: int = 64) -> Cached:
    """Run the frozen layers (all but the top `top`) once per distinct input, in length-sorted batches.

    `inputs` are what the server feeds the model (`ToolClassifier.render`: ids and segment ids).
    Repeated inputs (a step whose history the budget drops, the same opening of two conversations)
    are encoded once and share their features.
    """
    import torch

    distinct = dict.fromkeys(inputs)
    if len(distinct) < len(inputs):
        position = {item: i for i, item in enumerate(distinct)}
        return cache_features(model, list(distinct), top=top, batch=batch).take(
            torch.tensor([position[item] for item in inputs])
        )
    layers = model.bert.encoder.layer
    width = max(len(item.ids) for item in inputs)
    count = len(inputs)
    hidden = torch.zeros(count, width, model.config.hidden_size)
    mask = torch.zeros(count, width)
    lengths = torch.tensor([len(item.ids) for item in inputs])
    order = sorted(range(count), key=lambda i: len(inputs[i].ids))
    model.bert.encoder.layer = layers[: len(layers) - top]
    try:
        with torch.inference_mode():
            for start in range(0, count, batch):
                index = order[start : start + batch]
                longest = max(len(inputs[i].ids) for i in index)
                ids = torch.tensor([[*inputs[i].ids] + [0] * (longest - len(inputs[i].ids)) for i in index])
                types = torch.tensor([[*inputs[i].type_ids] + [0] * (longest - len(inputs[i].ids)) for i in index])
                attention = (torch.arange(longest)[None, :] < lengths[index][:, None]).long()
                where = torch.tensor(index)
                out = model.bert(input_ids=ids, attention_mask=attention, token_type_ids=types).last_hidden_state
                hidden[where, :longest] = out
                mask[where, :longest] = attention.float()
    finally:
        model.bert.encoder.layer = layers
    return Cached(hidden, mask, lengths)


def cls_logits(model: Any, cached: Cached, *, top: int) -> Any:
    """The classifier's logits from cached features, computed with the model's own modules (eval mode)."""
    import torch
    from transformers.masking_utils import create_bidirectional_mask

    longest = int(cached.lengths.max())
    hidden, mask = cached.hidden[:, :longest], cached.mask[:, :longest]
    layers = model.bert.encoder.layer
    if top > 1:
        extended = create_bidirectional_mask(config=model.config, inputs_embeds=hidden, attention_mask=mask.long())
        for below in layers[len(layers) - top : -1]:
            out = below(hidden, extended)
            hidden = out[0] if isinstance(out, tuple) else out
    layer = layers[-1]
    attention = layer.attention.self
    heads, size = attention.num_attention_heads, attention.attention_head_size
    cls_in = hidden[:, 0]
    query = attention.query(cls_in).view(-1, heads, 1, size)
    keys = attention.key(hidden).view(len(hidden), -1, heads, size).transpose(1, 2)
    values = attention.value(hidden).view(len(hidden), -1, heads, size).transpose(1, 2)
    scores = (query @ keys.transpose(-1, -2)) * attention.scaling  # [N, heads, 1, length]
    scores = scores.masked_fill(mask[:, None, None, :] == 0, torch.finfo(scores.dtype).min)
    context = (scores.softmax(-1) @ values).reshape(-1, heads * size)
    attended = layer.attention.output.LayerNorm(layer.attention.output.dense(context) + cls_in)
    out = layer.output.LayerNorm(layer.output.dense(layer.intermediate(attended)) + attended)
    return model.classifier(model.bert.pooler(out[:, None, :]))


def trainable_parameters(model: Any, *, top: int) -> list[Any]:
    """The parameters training updates: every one of the top `top` layers, the pooler and the head."""
    count = len(model.bert.encoder.layer)
    prefixes = (*(f"bert.encoder.layer.{i}." for i in range(count - top, count)), "bert.pooler.", "classifier.")
    chosen = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(prefixes))
        if parameter.requires_grad:
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


def train(
    model: Any, cached: Cached, labels: Any, *, top: int, epochs: int, lr: float, seed: int, weights: Any = None
) -> None:
    """AdamW on the top layers, minibatches of similar lengths (`BATCH`), a cosine schedule; dropout stays off."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    parameters = trainable_parameters(model, top=top)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.01)
    steps = epochs * math.ceil(len(labels) / BATCH)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    model.eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is faster, and much faster on a busy machine
    try:
        for _ in range(epochs):
            for index in _length_batches(cached.lengths, generator):
                loss = torch.nn.functional.cross_entropy(
                    cls_logits(model, cached.take(index), top=top), labels[index], weight=weights, label_smoothing=0.05
                )
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                schedule.step()
    finally:
        torch.set_num_threads(threads)
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def _length_batches(lengths: Any, generator: Any) -> list[Any]:
    """Minibatches of examples of about the same length (sorted with a little noise), in a random order."""
    import torch

    noise = torch.rand(len(lengths), generator=generator) * 4
    order = torch.argsort(lengths.float() + noise)
    chunks = list(order.split(BATCH))
    return [chunks[i] for i in torch.randperm(len(chunks), generator=generator).tolist()]


def margins(model: Any, cached: Cached, *, top: int) -> Any:
    """Positive-minus-negative logit per example (the log-odds the softmax turns into a probability)."""
    import torch

    out = torch.zeros(len(cached.lengths))
    with torch.inference_mode():
        for index in torch.argsort(cached.lengths).split(256):
            logits = cls_logits(model, cached.take(index), top=top)
            out[index] = logits[:, 1] - logits[:, 0]
    return out


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
    classifier: ToolClassifier, inputs: Sequence[Rendered], cached: Cached, *, top: int, atol: float = 1e-3
) -> float:
    """The largest gap between the served model's logits (`classifier`'s own batching of `inputs`) and the
    cached path's; raises past `atol`."""
    import torch

    model = classifier.model
    with torch.inference_mode():
        full = torch.cat([model(**classifier.model_inputs([item])).logits for item in inputs])
        fast = torch.cat([cls_logits(model, cached.take([i]), top=top) for i in range(len(inputs))])
    gap = float((full - fast).abs().max())
    if gap > atol:
        raise RuntimeError(f"the trained [CLS] path disagrees with the full model by {gap:.4g}")
    return gap
