"""The held-out English text `yap quant eval` measures on: fixed, shipped with the package, and disjoint from
the calibration texts in `quant.calibration` (a test checks that no sentence is shared).

Two parts, about 14,200 tokens with SmolLM2's tokenizer: plain expository and narrative prose on everyday
topics written for this package (`EVERYDAY_TEXT`, about 2,700 tokens), then running prose from the Python
Language Reference (`quant.heldout_docs`, about 11,500 tokens, PSF License Version 2). At 14,000 tokens the
95% interval of a top-1 agreement near 90% is about ±0.5 points; at 2,700 it was ±1.1.
Stdlib only: imported by the main process and by the runners.
"""

from __future__ import annotations

import hashlib

from .heldout_docs import SOURCE as DOCS_SOURCE
from .heldout_docs import TEXT as DOCS_TEXT

HELDOUT_NAME = "yap-heldout-en-v2"
# Where each part comes from, for the model card and the benchmark notes.
HELDOUT_SOURCES = ("everyday prose written for Yap (the project's license)", DOCS_SOURCE)

EVERYDAY_TEXT = """\
Lighthouses were once the most important buildings on many coasts. Before satellites and radio beacons, a \
sailor who approached land at night had little more than a chart, a compass and the hope of seeing a light \
where the chart promised one. Each lighthouse had its own pattern of flashes, so that a captain who counted \
the seconds between them could tell which headland he was looking at. Keepers lived in small stone houses at \
the foot of the tower. They trimmed the wicks, polished the great glass lenses and wound the clockwork that \
turned the lamp. In a storm they stayed awake all night, because a light that went dark could cost a ship and \
every person on board.

The lenses themselves were a quiet triumph of engineering. A plain lamp sends its light in every direction, \
and most of it is wasted on the sky and the rocks. The lens designed by Augustin Fresnel in the early \
nineteenth century gathered that scattered light into a narrow beam with rings of curved glass, each ring \
bending the light a little more than the one inside it. A lens of this kind could be seen from more than \
twenty miles away on a clear night. Many of them are still in place, although the keepers are gone and the \
lamps are now electric and switched on by a timer.

Bread is another old technology that most people use every day without thinking about it. Flour, water, salt \
and yeast are all it needs. When the dough is kneaded, two proteins in the flour join to form gluten, a \
stretchy network that can hold gas. The yeast feeds on the sugars in the flour and releases carbon dioxide, \
and the gluten traps the gas in thousands of small pockets. That is why a good dough rises slowly and feels \
soft and springy under the fingers. In the oven the gas expands, the water turns to steam, and the outside of \
the loaf dries and browns into a crust. A baker who wants a more open crumb uses a wetter dough and handles it \
gently, while a sandwich loaf is shaped tightly in a tin so that its slices come out even.

Some bakers keep a sourdough starter instead of buying yeast. A starter is simply flour and water that has \
been left to ferment, feeding wild yeasts and bacteria that live on the grain and in the air of the kitchen. \
It has to be fed every day or two, and it smells faintly sour, like yogurt or apples. The bacteria produce the \
acids that give the bread its tang, and the acids also help the loaf stay fresh for longer. A starter can live \
for decades, and some families pass theirs on from one generation to the next.

On Saturday mornings the market in the old square fills up early. The fishmonger arrives first, before it is \
light, and lays out his catch on a bed of crushed ice: silver sardines, a few flat plaice, a basket of mussels \
that still smell of the sea. Next to him an elderly couple sells eggs and honey from their farm in the hills. \
They know most of their customers by name and ask after their children. Across the square a young woman sets \
up a table of potted herbs, basil and mint and thyme, and the smell drifts across the stalls whenever the \
wind turns. By nine o'clock the square is crowded, and the café on the corner has run out of croissants.

Honeybees are among the most studied insects in the world, and they still surprise the people who study them. \
A single colony can hold tens of thousands of workers, one queen and, in summer, a few hundred drones. The \
workers change jobs as they age. The youngest clean the cells and feed the larvae; older ones build comb, \
guard the entrance and fan their wings to cool the hive; the oldest fly out to gather nectar and pollen. A \
forager that finds a rich patch of flowers returns and performs a dance on the comb. The angle of the dance \
tells the other bees the direction of the flowers relative to the sun, and the length of the waggling run \
tells them how far away the flowers are.

Bees also keep their hive at a remarkably steady temperature. In winter they cluster together in a tight ball \
and shiver their flight muscles to make heat, slowly rotating so that no bee stays on the cold outside of the \
cluster for too long. In summer they bring water into the hive and spread it in thin films over the comb, and \
the fanning bees drive air across it so that it evaporates and cools the brood. A beekeeper who opens a hive \
on a hot afternoon can hear the steady hum of the fans.

Rivers shape the land they flow through, and they do it slowly. Near its source a river is usually small and \
fast, cutting down into the rock and carrying stones along its bed. Further downstream, where the ground is \
flatter, it slows and begins to wander from side to side in loops called meanders. Water moves faster on the \
outside of each bend, wearing away the bank, and slower on the inside, where it drops sand and gravel. Over \
many years the loops grow wider, and sometimes a river cuts through the narrow neck of a loop during a flood, \
leaving behind a curved lake that slowly fills with reeds and silt.

Where a river finally meets the sea it often spreads out into a delta. The current slows so much that it can \
no longer carry its load of mud, and the mud settles into new land. Deltas are some of the most fertile places \
on earth, and many great cities grew up on them. They are also fragile. When dams upstream hold back the \
sediment, or when the sea level rises, the land at the edge of a delta can wash away faster than the river \
can rebuild it.

My grandfather repaired clocks in a narrow workshop behind his house. The room was lined with shelves, and on \
the shelves stood clocks of every size, from heavy marble mantel clocks to tiny travelling alarms that fitted \
in the palm of a hand. He worked at a bench under the window, with a lamp on a long arm and a set of \
screwdrivers so small that I was not allowed to touch them. When I visited as a child, I would sit on a stool \
and watch him take a movement apart, laying each wheel and spring on a cloth in the order it came out. He \
never wrote anything down. He said that a clock tells you how it goes back together if you listen to it \
carefully on the way apart.

What I remember most is the sound of the room. Dozens of clocks ticked at once, each at its own pace, so that \
the ticking rose and fell like rain on a roof. On the hour they did not all strike together, because he set \
them a few seconds apart on purpose. He said that a room full of clocks striking at the same moment was too \
loud for anyone to think. So at every hour there was a long, rolling chorus of chimes and bells that started \
near the door and ended by the window, and then the ticking went on as before.

Learning a musical instrument as an adult is slow, and it is also one of the more rewarding things a person \
can do. The first weeks are mostly frustration. The fingers do not go where they are told, the sound is thin, \
and simple tunes take far longer to play than they should. Progress comes from short, regular practice rather \
than from long sessions once a week. Twenty minutes a day, spent on one small passage at a time and played \
slowly enough to get it right, does more than two hours on a Sunday. After a few months, pieces that seemed \
impossible become merely difficult, and after a year a patient learner can usually play something that other \
people enjoy hearing.

Teachers often say that the hardest part is listening. A beginner tends to hear what he meant to play rather \
than what he actually played. Recording a practice session and listening back the next day is a humbling \
exercise, but it shows clearly where the rhythm drifts or a note is out of tune. Playing with other people \
helps too, because a group cannot wait for anyone who loses the beat, and keeping up teaches a steadiness that \
practising alone rarely does.

The first maps of the night sky were made long before telescopes. People who spent their nights outdoors, \
shepherds and sailors and farmers, noticed that the stars kept the same patterns year after year while a few \
bright points wandered slowly among them. They gave the patterns names and told stories about them, and they \
used the rising of certain stars to mark the seasons for planting and harvest. Later astronomers measured the \
positions of the stars with instruments of brass and wood and wrote them down in long tables. Those tables \
were accurate enough that modern scientists still use them to study how the stars have moved over the \
centuries.

A walk in the woods in late autumn is quiet in a way that summer never is. Most of the birds have left or gone \
silent, and the leaves on the ground are damp and make little sound underfoot. Without the leaves overhead the \
forest is full of grey light, and you can see much further between the trunks than you could in July. \
Mushrooms push up through the moss at the base of the old trees, some of them bright orange, some the colour \
of wet bark. A woodpecker works somewhere out of sight, and now and then a squirrel runs along a branch with an \
acorn in its mouth, hurrying to bury it before the first frost.

Good instructions are harder to write than they look. The writer already knows how the task is done, and it \
is easy to skip a step that seems obvious or to use a word the reader has never met. The best way to test a \
set of instructions is to give them to someone who has never done the task and to watch, without helping, \
while they follow them. Every place where the reader hesitates, goes back, or does something unexpected points \
to a sentence that should be changed. Short steps in the order they are done, one action to a step, with the \
expected result stated after each one, work better than long paragraphs.

Cities have always had to find ways to bring in clean water and carry dirty water away. The Romans built \
aqueducts that ran for dozens of miles, carrying water from springs in the hills along channels that sloped so \
gently that the drop could hardly be measured. In the nineteenth century many growing cities suffered \
outbreaks of disease until engineers built sewers and filtered their drinking water. Today most of that work \
is invisible. The pipes lie under the streets, and the treatment plants sit on the edges of town, and people \
only think about them when something goes wrong.

The old railway line through the valley closed many years ago, and the rails were taken up soon afterwards. \
For a long time the route was overgrown with brambles, and only the embankments and a few stone bridges showed \
where the trains had run. Then the council turned it into a path for walkers and cyclists. Because trains \
cannot climb steep hills, the path rises and falls so gently that children on small bicycles can ride the \
whole length of it. On fine weekends it is busy with families, dog walkers and older people who remember \
taking the train to the seaside when they were young.

Tea reached Europe in the seventeenth century, carried by merchants who had bought it in China. At first it \
was a luxury, sold by the ounce and kept in locked wooden boxes so that the servants could not help \
themselves. Over the next hundred years the price fell, and tea became an ordinary drink in many countries. \
Different places developed their own habits. Some people drink it strong with milk and sugar, others weak and \
clear, others with lemon, mint or spices. The plant itself is a kind of camellia, and the difference between \
green tea and black tea lies in how the leaves are treated after they are picked, not in the plant they come \
from.

Snow is made of ice crystals that grow in clouds when the air is cold enough and there is enough moisture. \
Each crystal starts on a tiny speck of dust and grows as water vapour freezes onto it. The shape it takes \
depends on the temperature and the humidity it passes through on the way down, which is why snowflakes come \
in plates, needles, columns and the familiar six-pointed stars. Fresh snow is mostly air, and that air makes \
it a good insulator. Small animals survive the winter in tunnels under the snow, where the temperature stays \
close to freezing even when the air above is far colder.

At the end of a long day at sea, the crew of a small fishing boat works quickly. The nets are hauled in and \
emptied, the catch is sorted into boxes and packed with ice, and the deck is washed down with buckets of sea \
water. Only when the boat is heading for the harbour does anyone sit down. Someone makes tea in the cramped \
cabin, and the skipper watches the lights on the shore grow brighter as they come in. In the harbour the buyers \
are already waiting on the quay, and within an hour of tying up the fish is on its way to the markets inland.
"""

HELDOUT_TEXT = EVERYDAY_TEXT + "\n" + DOCS_TEXT + "\n"


def heldout_sha256() -> str:
    """The held-out text's fingerprint, recorded with every quality report (a changed text is a different eval)."""
    return hashlib.sha256(HELDOUT_TEXT.encode()).hexdigest()[:16]
