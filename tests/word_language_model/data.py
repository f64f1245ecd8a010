"""The vocabulary of PyTorch's `word_language_model` example (`data.Dictionary`, `data.Corpus`), rewritten for the tests
of `hf-evolution convert` with the example's names and behaviour: words get ids in order of first appearance over
train.txt, valid.txt and test.txt, each line read in text mode as `line.split() + ['<eos>']`."""

import os

import torch


class Dictionary:
    def __init__(self):
        self.word2idx = {}
        self.idx2word = []

    def add_word(self, word):
        if word not in self.word2idx:
            self.idx2word.append(word)
            self.word2idx[word] = len(self.idx2word) - 1
        return self.word2idx[word]

    def __len__(self):
        return len(self.idx2word)


class Corpus:
    def __init__(self, path):
        self.dictionary = Dictionary()
        self.train = self.tokenize(os.path.join(path, "train.txt"))
        self.valid = self.tokenize(os.path.join(path, "valid.txt"))
        self.test = self.tokenize(os.path.join(path, "test.txt"))

    def tokenize(self, path):
        """Add the file's words to the dictionary, then return its token ids as one int64 tensor."""
        with open(path, encoding="utf8") as f:
            lines = [line.split() + ["<eos>"] for line in f]
        ids = [self.dictionary.add_word(word) for words in lines for word in words]
        return torch.tensor(ids, dtype=torch.int64)
