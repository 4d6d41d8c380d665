"""Calibration data: where it comes from, and the small embedded set used when none is given.

`resolve(name)` turns `AWQ_CALIB_DATASET` / `TRT_CALIB_DATASET` into a `DatasetSource` (pure); the
runners load it (with `datasets`) inside the quantization environment and report what they used.
Stdlib only: imported by the main process and by the runners.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

Kind = Literal["embedded", "local", "hub"]


@dataclass(frozen=True)
class DatasetSource:
    """A calibration dataset: embedded texts, a local dir/file, or a hub dataset (+ config, split, column)."""

    kind: Kind
    name: str
    config: str | None = None
    split: str = "train"
    column: str = "text"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# Well-known hub calibration sets, under the short names quantization scripts use.
HUB_PRESETS: Mapping[str, DatasetSource] = MappingProxyType(
    {
        "pileval": DatasetSource("hub", "mit-han-lab/pile-val-backup", None, "validation", "text"),
        "cnn_dailymail": DatasetSource("hub", "abisee/cnn_dailymail", "3.0.0", "train", "article"),
        "wikitext": DatasetSource("hub", "Salesforce/wikitext", "wikitext-2-raw-v1", "train", "text"),
        "ultrachat": DatasetSource("hub", "HuggingFaceH4/ultrachat_200k", None, "train_sft", "prompt"),
    }
)

EMBEDDED = DatasetSource("embedded", "yap-embedded-calibration")


def resolve(name: str | None) -> DatasetSource:
    """`None` -> the embedded set; an existing path -> local; a preset or any other name -> the hub."""
    if not name:
        return EMBEDDED
    if Path(name).expanduser().exists():
        return DatasetSource("local", str(Path(name).expanduser().resolve()))
    return HUB_PRESETS.get(name, DatasetSource("hub", name))


# A small, varied set (conversation, instructions, facts, code, numbers) so calibration runs offline.
EMBEDDED_TEXTS: tuple[str, ...] = (
    "Hello! How can I help you today? I can set timers, answer questions, and read your messages aloud.",
    "Sure, I have set a timer for ten minutes. I will let you know when it is done.",
    "The weather in Lisbon tomorrow looks sunny, with a high of twenty four degrees and a light breeze.",
    "Could you repeat that? The connection dropped for a second and I missed the last part of your question.",
    "Here is a short summary of the meeting: the launch moves to Thursday, and the design review is on Monday.",
    "I am not sure about that, but I can look it up. Would you like me to search the web for recent sources?",
    "To reset your password, open the settings page, choose security, and follow the link sent to your email.",
    "Photosynthesis converts light energy into chemical energy, storing it in sugars made from water and CO2.",
    "The French Revolution began in 1789 and reshaped European politics for the following century.",
    "Water boils at one hundred degrees Celsius at sea level, and at a lower temperature at high altitude.",
    "A healthy breakfast might include oats, fruit, yogurt, and a glass of water or a cup of green tea.",
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
    "SELECT name, COUNT(*) AS orders FROM customers JOIN orders USING (customer_id) GROUP BY name;",
    "for (let i = 0; i < items.length; i++) { total += items[i].price * items[i].quantity; }",
    "The function raises a KeyError on line twelve because the dictionary has no entry for 'timeout'.",
    '{"name": "Ada", "role": "engineer", "skills": ["python", "rust"], "active": true, "level": 3}',
    "Step one: preheat the oven to 180 degrees. Step two: mix flour, sugar and eggs. Step three: bake.",
    "The train leaves at 7:45 from platform three and arrives in the city center at 9:10.",
    "Prices rose by 3.2 percent last year, while wages grew by 4.1 percent on average.",
    "Please remind me to call my sister at six in the evening and to buy milk on the way home.",
    "The mitochondria is often called the powerhouse of the cell because it produces most of its ATP.",
    "In chess, the bishop moves diagonally any number of squares, while the knight jumps in an L shape.",
    "Thank you for your patience. Your order has shipped and should arrive within three business days.",
    "Can you translate 'good morning, how are you' into Spanish? Buenos dias, como estas?",
    "The capital of Japan is Tokyo, a city of more than thirteen million people in its central wards.",
    "I see a spreadsheet on your screen; the totals in column D do not include the last two rows.",
    "Let me think about that. If a train travels 120 kilometers in 1.5 hours, its speed is 80 km per hour.",
    "Gravity keeps the planets in orbit around the sun, and the moon in orbit around the earth.",
    "Your next meeting is at 2 PM with the design team, in room 4B, and it is scheduled for thirty minutes.",
    "Sorry, I cannot help with that request, but I can suggest a few resources that might be useful.",
    "A haiku has three lines of five, seven, and five syllables, often about nature or the seasons.",
    "The quick brown fox jumps over the lazy dog, a sentence that uses every letter of the alphabet.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 1000 3.14159 2.71828 -17 1e-5 65536 2024.",
    "git commit -m 'Fix the timeout in the retry loop' && git push origin main",
    "Vaccines train the immune system to recognise a pathogen without causing the disease itself.",
    "Turn left at the next intersection, then continue straight for about five hundred meters.",
    "The library opens at nine, closes at eight on weekdays, and is closed on public holidays.",
    "An API key identifies the caller; keep it secret and rotate it if you think it has leaked.",
    "The ocean covers about seventy one percent of the earth's surface and holds most of its water.",
    "Okay, playing your focus playlist now. Say 'skip' to hear the next song or 'stop' to end it.",
    "Newton's second law states that force equals mass times acceleration, F = m a.",
    "The recipe serves four: two cups of rice, one onion, three cloves of garlic, and a pinch of salt.",
    "<think>The user asked for a short answer, so keep it to one sentence.</think>It is a quarter past nine.",
    "Electric cars convert stored battery energy into motion with efficiencies above eighty percent.",
    "To install the package, run pip install with the name of the package, then import it in Python.",
    "The museum's new exhibit features paintings from the seventeenth century Dutch golden age.",
    "Can you summarize this article in three bullet points and highlight any numbers it mentions?",
    "Hyperparameters such as learning rate and batch size strongly affect how a neural network trains.",
)
