import numpy as np
import tensorflow as tf

from data import pipeline


def _dataset(n):
  return tf.data.Dataset.from_tensor_slices({
      'image': np.arange(n * 4, dtype=np.uint8).reshape(n, 2, 2, 1),
      'label': np.arange(n, dtype=np.int32)})


def test_eval_batches_count_every_example_once_with_padded_last_batch():
  batches = list(pipeline.as_numpy(pipeline.eval_batches(_dataset(10), batch_size=4)))
  assert [b['image'].shape for b in batches] == [(4, 2, 2, 1)] * 3
  masks = np.concatenate([b['valid'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  assert masks.sum() == 10
  np.testing.assert_array_equal(labels[masks], np.arange(10))
  np.testing.assert_array_equal(masks, [True] * 10 + [False] * 2)
  assert (batches[-1]['image'][2:] == 0).all()


def test_train_batches_are_full_and_depend_only_on_seed_and_epoch():
  def labels(seed, epoch, skip=0):
    ds = pipeline.train_batches(_dataset(10), batch_size=3, seed=seed, epoch=epoch,
                                skip_batches=skip)
    return [b['label'].tolist() for b in pipeline.as_numpy(ds)]
  first = labels(0, 0)
  assert len(first) == 3 and all(len(b) == 3 for b in first)  # remainder dropped
  assert first == labels(0, 0)
  assert first != labels(0, 1) and first != labels(1, 0)
  assert labels(0, 0, skip=2) == first[2:]  # resuming mid-epoch sees the same batches


def test_augment_fn_gets_a_distinct_stateless_seed_per_example_and_epoch():
  def seeds(epoch):
    ds = pipeline.train_batches(
        _dataset(6), batch_size=6, seed=7, epoch=epoch,
        augment_fn=lambda f, seed: {**f, 'seed': seed})
    batch = next(pipeline.as_numpy(ds))
    return {int(l): tuple(s) for l, s in zip(batch['label'], batch['seed'])}
  epoch0 = seeds(0)
  assert len(set(epoch0.values())) == 6
  assert epoch0 == seeds(0)  # same epoch, same seeds, whatever the shuffle
  assert not set(epoch0.values()) & set(seeds(1).values())


def test_batches_without_per_example_functions_match_the_mapped_path():
  # With nothing to map, batches are formed before the index is dropped (fast path);
  # they must equal the per-example path's batches, order included.
  dataset = tf.data.Dataset.from_tensor_slices(
      {'image': np.arange(50 * 4, dtype=np.uint8).reshape(50, 2, 2, 1),
       'label': np.arange(50, dtype=np.int32)})
  kwargs = dict(batch_size=8, seed=3, epoch=2, skip_batches=1)
  fast = list(pipeline.train_batches(dataset, **kwargs).as_numpy_iterator())
  mapped = list(pipeline.train_batches(dataset, preprocess_fn=lambda f: f,
                                       **kwargs).as_numpy_iterator())
  assert len(fast) == len(mapped) == 50 // 8 - 1
  for a, b in zip(fast, mapped):
    np.testing.assert_array_equal(a['label'], b['label'])
    np.testing.assert_array_equal(a['image'], b['image'])


def test_as_numpy_turns_autotuning_off_and_yields_the_same_batches(monkeypatch):
  # Dropping an autotuned iterator waits for its model thread's next round (up to 60 s;
  # 18 s measured at the CNN's epoch boundaries): the loop's iterators run without it.
  def decode(features):
    return {**features, 'image': tf.cast(features['image'], tf.float32) / 255.0}

  dataset = pipeline.train_batches(_dataset(20), batch_size=4, seed=3, epoch=1,
                                   preprocess_fn=decode)
  assert dataset.options().autotune.enabled is not False  # the pipeline asks for it
  assert pipeline.without_autotune(dataset).options().autotune.enabled is False
  iterated = []
  original = pipeline.without_autotune
  monkeypatch.setattr(pipeline, 'without_autotune',
                      lambda ds: iterated.append(original(ds)) or iterated[-1])
  ours = list(pipeline.as_numpy(dataset))
  assert [ds.options().autotune.enabled for ds in iterated] == [False]
  autotuned = list(dataset.as_numpy_iterator())
  assert len(ours) == len(autotuned) == 5
  for a, b in zip(ours, autotuned):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
