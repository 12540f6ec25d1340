"""Stateless data augmentation and the per-epoch training dataset.

Everything random here is drawn from stateless generators keyed on (seed, epoch, batch index),
so a training run resumed at epoch k sees exactly the images that an uninterrupted run would.

- `random_affine`: one composed rotation + zoom + shift (+ shear, a slant) per image, applied in a single
  bilinear resampling (`keras.ops.image.affine_transform`, fill 0). No flips: a flipped 2 is not a 2.
- `random_elastic`: Simard, Steinkraus and Platt's (2003) elastic distortion: a random displacement
  field smoothed by a Gaussian, as different hands bend the same stroke; `random_affine_elastic`
  composes it with the affine map in one resampling.
- `random_cutout`: DeVries and Taylor's (2017) Cutout: a square of each image set to 0, as a stroke
  missing or faint, after the other maps.
- `random_thickness`: each image's strokes made thicker or thinner by a random amount, as different pens
  and hands press: a blend towards a one-pixel grey dilation or erosion, after the maps.
- `random_mixup`: Zhang et al.'s (2018) mixup: each image and its one-hot label blended with another
  image of the batch and its label, last of all.
- `make_training_dataset`: one epoch of shuffled, augmented, batched (images, one-hot labels).
- `make_evaluation_dataset`: batched images (and one-hot labels when given), in order.

Labels are returned ONE-HOT (float32, shape (batch, 10)) so that the loss can use
`CategoricalCrossentropy(label_smoothing=...)`.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from pipeline.core.config import IMAGE_SHAPE, NUM_CLASSES


def random_affine(images, seed, max_rotation_degrees=10.0, max_zoom=0.1, max_shift=0.1, max_shear=0.0):
    """Rotate, zoom and shift each image of a batch by its own random amounts.

    images: float32 tensor (batch, height, width, channels).
    seed: shape-[2] integer tensor; the same seed and images give the same output.
    Per image: an angle uniform in +-max_rotation_degrees, a zoom factor uniform in
    [1 - max_zoom, 1 + max_zoom] drawn separately for x and y (as Keras' ImageDataGenerator
    zoom_range does), a shift uniform in +-max_shift of the width (x) and height (y), and when max_shear > 0
    a horizontal shear uniform in +-max_shear (x moves by shear * (y - centre): a slant; drawn on its own
    stream, fold_in(seed, 5), so the other draws stay as they were without it).
    All are composed into one affine map about the image centre, resampled bilinearly,
    with 0 where the source lies outside the image.
    """
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    if images.shape.rank != 4:
        raise ValueError(f"images must have shape (batch, height, width, channels), got {images.shape}.")
    m00, m01, offset_x, m10, m11, offset_y = _random_inverse_maps(images, seed, max_rotation_degrees, max_zoom,
                                                                  max_shift, max_shear)
    zeros = tf.zeros_like(m00)
    transforms = tf.stack([m00, m01, offset_x, m10, m11, offset_y, zeros, zeros], axis=1)
    return keras.ops.image.affine_transform(images, transforms, interpolation="bilinear", fill_mode="constant",
                                            fill_value=0, data_format="channels_last")


def _random_inverse_maps(images, seed, max_rotation_degrees, max_zoom, max_shift, max_shear=0.0):
    """random_affine's draws as the inverse map of each image (output pixel -> input pixel):
    x_in = m00 x + m01 y + offset_x, y_in = m10 x + m11 y + offset_y (x the column, y the row)."""
    batch_size = tf.shape(images)[0]
    height = tf.cast(tf.shape(images)[1], tf.float32)
    width = tf.cast(tf.shape(images)[2], tf.float32)

    # One draw of five numbers in [-1, 1) per image: angle, zoom x, zoom y, shift x, shift y.
    draws = tf.random.stateless_uniform([batch_size, 5], seed=seed, minval=-1.0, maxval=1.0)
    angle = draws[:, 0] * (max_rotation_degrees * math.pi / 180.0)
    zoom_x = 1.0 + draws[:, 1] * max_zoom
    zoom_y = 1.0 + draws[:, 2] * max_zoom
    shift_x = draws[:, 3] * max_shift * width
    shift_y = draws[:, 4] * max_shift * height

    # The forward map sends an input point q to  centre + shift + R(angle) Z (q - centre).
    # The transform op wants the inverse (output pixel -> input pixel):
    #   q = centre + Z^-1 R(-angle) (p - centre - shift) = M p + offset.
    cos, sin = tf.cos(angle), tf.sin(angle)
    m00, m01 = cos / zoom_x, sin / zoom_x
    m10, m11 = -sin / zoom_y, cos / zoom_y
    if max_shear > 0:
        # The forward map shears first (x += shear * (y - centre)), so its inverse S^-1 comes last: M = S^-1 M.
        shear = tf.random.stateless_uniform([batch_size], seed=tf.random.experimental.stateless_fold_in(seed, 5),
                                            minval=-max_shear, maxval=max_shear)
        m00, m01 = m00 - shear * m10, m01 - shear * m11
    centre_x = (width - 1.0) / 2.0
    centre_y = (height - 1.0) / 2.0
    moved_x = centre_x + shift_x
    moved_y = centre_y + shift_y
    offset_x = centre_x - m00 * moved_x - m01 * moved_y
    offset_y = centre_y - m10 * moved_x - m11 * moved_y
    return m00, m01, offset_x, m10, m11, offset_y


# Simard et al.'s smoothing for 29x29 digits: a displacement field of U(-1, 1) per pixel and axis,
# blurred by a Gaussian of this many pixels, then scaled by `alpha` (their 34; 0 turns it off).
ELASTIC_SIGMA = 4.0


def _gaussian_kernel(sigma: float):
    radius = int(2 * sigma)
    offsets = np.arange(-radius, radius + 1, dtype=np.float32)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


def random_elastic(images, seed, alpha=34.0, sigma=ELASTIC_SIGMA):
    """Move each pixel of each image by a smooth random displacement, resampled bilinearly (0 outside).

    images: float32 (batch, height, width, 1); seed: shape-[2] integers, as random_affine.
    The displacement at a pixel is alpha times a Gaussian(sigma)-smoothed uniform(-1, 1) field,
    drawn separately for x and y.
    """
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    field = _elastic_field(images, seed, alpha, sigma)
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    rows = tf.cast(tf.range(height), tf.float32)[None, :, None] + field[..., 1]
    columns = tf.cast(tf.range(width), tf.float32)[None, None, :] + field[..., 0]
    return _bilinear_sample(images, rows, columns)


def random_affine_elastic(images, affine_seed, elastic_seed, alpha, max_rotation_degrees=10.0, max_zoom=0.1,
                          max_shift=0.1, sigma=ELASTIC_SIGMA, max_shear=0.0):
    """random_elastic then random_affine with the same draws, in ONE bilinear resampling.

    Each resampling blurs: the two in turn leave a digit about a third fewer pixels above 0.9 than
    the affine map alone, so training images would be softer than the test images. Here every output
    pixel reads the source at its affine point plus the elastic displacement (a stationary random
    field, so drawing it on the output's grid instead of the intermediate one changes nothing in law).
    """
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    m00, m01, offset_x, m10, m11, offset_y = (value[:, None, None] for value in _random_inverse_maps(
        images, affine_seed, max_rotation_degrees, max_zoom, max_shift, max_shear))
    field = _elastic_field(images, elastic_seed, alpha, sigma)
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    y = tf.cast(tf.range(height), tf.float32)[None, :, None]
    x = tf.cast(tf.range(width), tf.float32)[None, None, :]
    columns = m00 * x + m01 * y + offset_x + field[..., 0]
    rows = m10 * x + m11 * y + offset_y + field[..., 1]
    return _bilinear_sample(images, rows, columns)


def _elastic_field(images, seed, alpha, sigma):
    """(batch, height, width, 2): the (dx, dy) displacement of every pixel, in pixels."""
    batch_size, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    field = tf.random.stateless_uniform([batch_size, height, width, 2], seed=seed, minval=-1.0, maxval=1.0)
    kernel = tf.constant(_gaussian_kernel(sigma))
    size = int(kernel.shape[0])
    # Separable blur of both channels (dx, dy): along the rows, then along the columns.
    along_x = tf.tile(tf.reshape(kernel, [1, size, 1, 1]), [1, 1, 2, 1])
    along_y = tf.tile(tf.reshape(kernel, [size, 1, 1, 1]), [1, 1, 2, 1])
    field = tf.nn.depthwise_conv2d(field, along_x, strides=[1, 1, 1, 1], padding="SAME")
    return alpha * tf.nn.depthwise_conv2d(field, along_y, strides=[1, 1, 1, 1], padding="SAME")


def random_cutout(images, seed, size):
    """Set a size x size square of each image to 0, centred at a uniform random pixel (clipped at the edges,
    as DeVries and Taylor's Cutout, so a square near an edge covers less). images: (B, H, W, 1) float32."""
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    batch_size, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    centres = tf.random.stateless_uniform([batch_size, 2], seed=seed, minval=0, maxval=2**30, dtype=tf.int32)
    top = (centres[:, 0] % height - size // 2)[:, None, None]
    left = (centres[:, 1] % width - size // 2)[:, None, None]
    rows, columns = tf.range(height)[None, :, None], tf.range(width)[None, None, :]
    inside = (rows >= top) & (rows < top + size) & (columns >= left) & (columns < left + size)
    return tf.where(inside[..., None], 0.0, images)


def random_thickness(images, seed, amount):
    """Thicken or thin the strokes of each image: with t uniform in +-amount per image, the image moves a
    fraction t of the way to its one-pixel dilation (t > 0) or |t| of the way to its erosion (t < 0), both
    over the pixel and its four neighbours (a plus sign, grey levels: max and min). On train.csv's digits a
    full erosion leaves a median 0.31x the ink and a full dilation gives 1.75x, hence amount at most 1.
    images: (B, H, W, 1) float32; seed: shape-[2] integers."""
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    height, width = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]])
    neighbourhood = tf.stack([images] + [padded[:, 1 + down:1 + down + height, 1 + right:1 + right + width]
                                         for down, right in ((-1, 0), (1, 0), (0, -1), (0, 1))])
    thick, thin = tf.reduce_max(neighbourhood, axis=0), tf.reduce_min(neighbourhood, axis=0)
    fraction = tf.random.stateless_uniform([tf.shape(images)[0], 1, 1, 1], seed=seed, minval=-amount, maxval=amount)
    return tf.where(fraction > 0, images + fraction * (thick - images), images - fraction * (thin - images))


def random_mixup(images, labels, seed, alpha):
    """Blend each image with the one before it in the batch (the first with the last; the batch's order is
    already a random permutation), and its one-hot label likewise, by a weight w ~ Beta(alpha, alpha) folded to
    w >= 0.5: each image stays mostly itself, so its label keeps its argmax (and accuracy its meaning).
    images: (B, H, W, 1) float32; labels: (B, 10) float32; seed: shape-[2] integers. Returns both."""
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    labels = tf.convert_to_tensor(labels, dtype=tf.float32)
    shape = [tf.shape(images)[0]]
    # Beta from two Gammas, in float64: at small alpha a float32 Gamma draw can underflow to 0.
    first = tf.random.stateless_gamma(shape, tf.random.experimental.stateless_fold_in(seed, 0), alpha=alpha,
                                      dtype=tf.float64)
    second = tf.random.stateless_gamma(shape, tf.random.experimental.stateless_fold_in(seed, 1), alpha=alpha,
                                       dtype=tf.float64)
    total = first + second
    weight = tf.where(total > 0, first / tf.where(total > 0, total, 1.0), 1.0)
    weight = tf.cast(tf.maximum(weight, 1.0 - weight), tf.float32)
    mixed_images = weight[:, None, None, None] * images + (1.0 - weight[:, None, None, None]) * tf.roll(images, 1, 0)
    mixed_labels = weight[:, None] * labels + (1.0 - weight[:, None]) * tf.roll(labels, 1, 0)
    return mixed_images, mixed_labels


def _bilinear_sample(images, rows, columns):
    """images (B, H, W, 1) read at real-valued (rows, columns) of shape (B, H, W); 0 outside the image."""
    batch_size, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    flat = tf.reshape(images, [-1])
    top, left = tf.floor(rows), tf.floor(columns)
    row_weight, column_weight = rows - top, columns - left
    top, left = tf.cast(top, tf.int32), tf.cast(left, tf.int32)
    image_start = (tf.range(batch_size) * height * width)[:, None, None]
    result = tf.zeros_like(rows)
    for row_step, column_step in ((0, 0), (0, 1), (1, 0), (1, 1)):
        row, column = top + row_step, left + column_step
        inside = (row >= 0) & (row < height) & (column >= 0) & (column < width)
        index = image_start + tf.clip_by_value(row, 0, height - 1) * width + tf.clip_by_value(column, 0, width - 1)
        weight = ((row_weight if row_step else 1.0 - row_weight)
                  * (column_weight if column_step else 1.0 - column_weight))
        result += tf.where(inside, weight * tf.gather(flat, index), 0.0)
    return result[..., None]


def _as_images(images):
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"images must have shape (N, 28, 28, 1), got {images.shape}.")
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32, copy=False)


def _as_one_hot(labels, count):
    labels = np.asarray(labels)
    if labels.shape != (count,):
        raise ValueError(f"labels must have shape ({count},), got {labels.shape}.")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"labels must lie in 0..{NUM_CLASSES - 1}.")
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels.astype(np.int64)]


_NO_AUTOTUNE = tf.data.Options()
_NO_AUTOTUNE.autotune.enabled = False


def make_training_dataset(images, labels, batch_size, seed, epoch, augment=True,
                          max_rotation_degrees=10.0, max_zoom=0.1, max_shift=0.1, strength=1.0, elastic=0.0,
                          cutout=0, thickness=0.0, mixup=0.0, shear=0.0):
    """One epoch of training data: (images float32 (B, 28, 28, 1), one-hot labels float32 (B, 10)).

    images: (N, 28, 28, 1), float32 in [0, 1] (uint8 0-255 is scaled). labels: (N,) ints 0-9.
    The order is a numpy permutation from np.random.default_rng([seed, epoch]); batch i is
    augmented with the stateless seed fold_in([seed, epoch], i). Nothing else is random, so the
    dataset depends only on (seed, epoch). The last batch may be smaller than batch_size.
    strength scales the three ranges (the `--augmentation` option); 0 is the same as augment=False.
    elastic: alpha of random_elastic (the `--elastic` option), composed with the affine map in one
    resampling (random_affine_elastic); 0: none.
    cutout: the side in pixels of random_cutout's square, after the maps (the `--cutout` option); 0: none.
    thickness: random_thickness's amount, after the maps and before cutout (the `--thickness` option); 0: none.
    shear: random_affine's max_shear, composed with the other maps (the `--shear` option; not scaled by
    strength); 0: none.
    mixup: random_mixup's alpha, last of all, so labels may be blends of two (the `--mixup` option); 0: none.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be non-negative, got seed={seed}, epoch={epoch}.")
    images = _as_images(images)
    one_hot = _as_one_hot(labels, len(images))
    order = np.random.default_rng([seed, epoch]).permutation(len(images))
    dataset = tf.data.Dataset.from_tensor_slices((images[order], one_hot[order])).batch(batch_size)
    if strength < 0:
        raise ValueError(f"strength must be 0 or more, got {strength}.")
    if elastic < 0:
        raise ValueError(f"elastic must be 0 or more, got {elastic}.")
    if not 0 <= cutout <= IMAGE_SHAPE[0]:
        raise ValueError(f"cutout must be 0 to {IMAGE_SHAPE[0]} pixels, got {cutout}.")
    for name, value in (("thickness", thickness), ("mixup", mixup), ("shear", shear)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be 0 to 1, got {value}.")
    if augment and (strength > 0 or elastic > 0 or cutout > 0 or thickness > 0 or mixup > 0 or shear > 0):
        max_rotation_degrees, max_zoom, max_shift = (strength * max_rotation_degrees, strength * max_zoom,
                                                     strength * max_shift)
        epoch_seed = tf.constant([seed, epoch], dtype=tf.int64)

        def augment_batch(batch_index, batch):
            batch_images, batch_labels = batch
            batch_seed = tf.random.experimental.stateless_fold_in(epoch_seed, batch_index)
            # The elastic field has its own stream, so adding it leaves the affine draws as they were.
            elastic_seed = tf.random.experimental.stateless_fold_in(batch_seed, 1)
            if elastic > 0 and (strength > 0 or shear > 0):
                batch_images = random_affine_elastic(batch_images, batch_seed, elastic_seed, elastic,
                                                     max_rotation_degrees, max_zoom, max_shift, max_shear=shear)
            elif elastic > 0:
                batch_images = random_elastic(batch_images, elastic_seed, alpha=elastic)
            elif strength > 0 or shear > 0:
                batch_images = random_affine(batch_images, batch_seed, max_rotation_degrees, max_zoom, max_shift,
                                             shear)
            if thickness > 0:
                batch_images = random_thickness(batch_images, tf.random.experimental.stateless_fold_in(batch_seed, 3),
                                                thickness)
            if cutout > 0:
                batch_images = random_cutout(batch_images, tf.random.experimental.stateless_fold_in(batch_seed, 2),
                                             cutout)
            if mixup > 0:
                batch_images, batch_labels = random_mixup(
                    batch_images, batch_labels, tf.random.experimental.stateless_fold_in(batch_seed, 4), mixup)
            return batch_images, batch_labels

        dataset = dataset.enumerate().map(augment_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # No autotuning thread: with it, dropping the iterator at an epoch's end (inside Keras's fit, holding
    # Python's lock) waited 19-47 s on a busy 2-core machine, silencing the progress lines; without it
    # the wait is gone and an epoch is no slower (docs/experiments.md, 2026-12-02).
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(_NO_AUTOTUNE)


def make_evaluation_dataset(images, labels=None, batch_size=256):
    """Images (and one-hot labels if given) in their original order, batched, no augmentation."""
    images = _as_images(images)
    if labels is None:
        dataset = tf.data.Dataset.from_tensor_slices(images)
    else:
        dataset = tf.data.Dataset.from_tensor_slices((images, _as_one_hot(labels, len(images))))
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(_NO_AUTOTUNE)
