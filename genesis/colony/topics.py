"""Topics of a corpus: its articles clustered by tf-idf and k-means (scikit-learn), the
structure a colony's niches can form around (as cluster-BTM clusters its training data).

A `TopicModel` is plain data (vocabulary, idf weights and centroids), saved with the
colony that replays on it, so a replay assigns the same topics on any machine.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np

HEADING = re.compile(r"^ = [^=].* = $")  # a WikiText article's title line: " = Title = "
MAX_FEATURES = 2000  # tf-idf vocabulary: the most frequent words of the corpus
MAX_TOPICS = 64


def articles(text: str) -> list[str]:
    """The articles of a WikiText split, each from its title line to the next title."""
    found: list[list[str]] = []
    for line in text.splitlines(keepends=True):
        if HEADING.match(line.rstrip("\n")) or not found:
            found.append([])
        found[-1].append(line)
    return [doc for doc in ("".join(lines).strip("\n") for lines in found) if doc.strip()]


@dataclass(frozen=True)
class TopicModel:
    """Topics as tf-idf centroids: a text belongs to the nearest centroid of its
    L2-normalized tf-idf vector.

    Attributes:
        vocabulary: the words counted, in column order.
        idf: each word's inverse document frequency.
        centroids: one row per topic.
    """

    vocabulary: tuple[str, ...]
    idf: tuple[float, ...]
    centroids: tuple[tuple[float, ...], ...]

    @property
    def count(self) -> int:
        return len(self.centroids)

    def vectors(self, texts: list[str]) -> np.ndarray:
        """The texts' L2-normalized tf-idf vectors, shape (texts, vocabulary)."""
        from sklearn.feature_extraction.text import CountVectorizer

        counts = CountVectorizer(vocabulary=list(self.vocabulary)).transform(texts).toarray().astype(float)
        frequency = np.where(counts > 0, 1.0 + np.log(np.where(counts > 0, counts, 1.0)), 0.0)  # sublinear tf
        weighted = frequency * np.array(self.idf)
        norms = np.linalg.norm(weighted, axis=1, keepdims=True)
        return weighted / np.where(norms > 0, norms, 1.0)

    def topics(self, texts: list[str]) -> list[int]:
        """The topic of each text (the nearest centroid)."""
        distances = ((self.vectors(texts)[:, None, :] - np.array(self.centroids)[None]) ** 2).sum(axis=2)
        return distances.argmin(axis=1).tolist()

    def to_json(self) -> str:
        return json.dumps({"vocabulary": self.vocabulary, "idf": self.idf, "centroids": self.centroids})

    @classmethod
    def from_json(cls, text: str) -> TopicModel:
        """A model `to_json` wrote; checked, since a colony may come from someone else.

        Raises:
            ValueError: not a topic model of consistent sizes.
        """
        data = json.loads(text)
        vocabulary, idf, centroids = data["vocabulary"], data["idf"], data["centroids"]
        if not (0 < len(vocabulary) == len(idf) <= MAX_FEATURES and 1 <= len(centroids) <= MAX_TOPICS
                and all(len(c) == len(vocabulary) for c in centroids)
                and np.isfinite(np.array(idf, dtype=float)).all() and np.isfinite(np.array(centroids, dtype=float)).all()):
            raise ValueError("not a topic model of consistent sizes")
        return cls(tuple(map(str, vocabulary)), tuple(map(float, idf)), tuple(tuple(map(float, c)) for c in centroids))


def fit_topics(documents: list[str], count: int, seed: int = 0) -> TopicModel:
    """Cluster `documents` into `count` topics: sublinear tf-idf over the `MAX_FEATURES`
    most frequent words (English stop words, WikiText's "<unk>" and words in more than
    half the documents left out), then k-means with `seed`."""
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

    if not 1 <= count <= min(MAX_TOPICS, len(documents)):
        raise ValueError(f"topics must be between 1 and {min(MAX_TOPICS, len(documents))} for {len(documents)} articles")
    vectorizer = TfidfVectorizer(max_features=MAX_FEATURES, stop_words=sorted(ENGLISH_STOP_WORDS | {"unk"}),
                                 max_df=0.5, sublinear_tf=True)
    matrix = vectorizer.fit_transform(documents)
    means = KMeans(n_clusters=count, random_state=seed, n_init=10).fit(matrix.toarray())
    vocabulary = [word for word, _ in sorted(vectorizer.vocabulary_.items(), key=lambda item: item[1])]
    return TopicModel(tuple(vocabulary), tuple(map(float, vectorizer.idf_)),
                      tuple(tuple(map(float, row)) for row in means.cluster_centers_))


def colony_topics(store, documents: list[str], count: int) -> TopicModel:
    """The colony's topic model of `count` topics: the one saved in its database, or one
    fitted on `documents` and saved there (so every later replay assigns the same topics).

    Raises:
        ValueError: the saved model is unreadable, or has another number of topics.
    """
    import sqlalchemy as sa

    from genesis.colony.database import settings_table

    key = "topics"
    with store.read() as db:
        saved = db.execute(sa.select(settings_table.c.value).where(settings_table.c.key == key)).scalar()
    if saved is not None:
        model = TopicModel.from_json(saved)
        if model.count != count:
            raise ValueError(f"the colony's saved clustering has {model.count} topics, not {count}")
        return model
    model = fit_topics(documents, count)
    with store.write() as db:
        db.execute(settings_table.insert(), [{"key": key, "value": model.to_json()}])
    return model


def topic_chunks(model: TopicModel, documents: list[str], tokenizer, width: int) -> list[list[list[int]]]:
    """Each topic's chunks of `width` tokens, cut from its documents in order."""
    chunks: list[list[list[int]]] = [[] for _ in range(model.count)]
    for document, topic in zip(documents, model.topics(documents)):
        ids = tokenizer.encode(document).ids
        chunks[topic] += [ids[i:i + width] for i in range(0, len(ids) - width + 1, width)]
    return chunks


def ordered(chunks: list[list[list[int]]], count: int, order: str, start: int) -> list[tuple[list[int], int]]:
    """`count` (chunk, topic) pairs, an equal share from each topic that has chunks:
    "blocks" (one topic after another, non-stationary; replay `start` rotates which comes
    first) or "interleaved" (round robin). Replay `start` also begins each topic's share
    `start` shares further on (wrapping), so replays read different stretches. No pairs
    when no topic has a chunk."""
    present = [t for t in range(len(chunks)) if chunks[t]]
    if not present:
        return []
    share = max(1, count // len(present))
    picked = {t: [chunks[t][(start * share + i) % len(chunks[t])] for i in range(share)] for t in present}
    if order == "blocks":
        rotation = present[start % len(present):] + present[:start % len(present)]
        return [(chunk, t) for t in rotation for chunk in picked[t]]
    if order == "interleaved":
        return [(picked[t][i], t) for i in range(share) for t in present]
    raise ValueError(f"order must be blocks or interleaved, not {order!r}")


def specialization(weights: list[dict[str, float]], topics: list[int]) -> float:
    """Mutual information (bits) between the agent a consensus listens to and the chunk's
    topic: Σ_t p(t)·KL(p(agent | t) || p(agent)), where p(agent | chunk) are the chunk's
    consensus weights. 0 when every topic is answered by the same mixture."""
    agents = sorted({a for w in weights for a in w})
    if not agents or not topics:
        return 0.0
    matrix = np.array([[w.get(a, 0.0) for a in agents] for w in weights])
    overall = matrix.mean(axis=0)
    information = 0.0
    for topic in set(topics):
        rows = matrix[[i for i, t in enumerate(topics) if t == topic]]
        given = rows.mean(axis=0)
        mask = given > 0
        information += len(rows) / len(topics) * float((given[mask] * np.log2(given[mask] / overall[mask])).sum())
    return information
