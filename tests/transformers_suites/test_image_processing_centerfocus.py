"""transformers' `ImageProcessingTestMixin` (tests/test_image_processing_common.py) on `CenterFocusImageProcessor`.

The two lines' mixins differ: 4.x takes `image_processing_class` / `fast_image_processing_class` and an
`image_processor_dict` from the test case; 5.x takes an `ImageProcessingTester` subclass whose
`image_processing_classes` ({backend: class}) it looks up by the test folder's name among transformers' own models,
which finds nothing here, so the tester takes the classes centerfocus registers with `AutoImageProcessor` (the
"slow"/"fast" pair on 4.x, the {"pil", "torchvision"} backends on 5.x).
"""

import unittest

from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING

from centerfocus import CenterFocusConfig, CenterFocusImageProcessor

from ._upstream import TRANSFORMERS_5, load_or_skip


common = load_or_skip("test_image_processing_common")
ImageProcessingTestMixin = common.ImageProcessingTestMixin

# kwargs the tests build the processor with: every value differs from the default, so the attribute and
# serialisation checks see them (the output size is rectangular: height and width cannot be swapped unnoticed)
IMAGE_PROCESSOR_KWARGS = {
    "do_resize": True,
    "size": {"height": 18, "width": 20},
    "do_rescale": True,
    "rescale_factor": 1 / 127.5,
    "do_normalize": True,
    "image_mean": [0.4, 0.5, 0.6],
    "image_std": [0.3, 0.2, 0.1],
    "do_convert_rgb": True,
}


def registered_image_processors() -> dict:
    """{backend: class} as registered for CenterFocusConfig: 5.x keeps a dict, 4.x a (slow, fast) pair."""
    try:
        registered = IMAGE_PROCESSOR_MAPPING[CenterFocusConfig]
    except KeyError:
        registered = None
    if isinstance(registered, dict):
        classes = {backend: cls for backend, cls in registered.items() if cls is not None}
    elif isinstance(registered, (tuple, list)):
        classes = {name: cls for name, cls in zip(("slow", "fast"), registered) if cls is not None}
    else:
        classes = {}
    return classes or {"pil" if TRANSFORMERS_5 else "slow": CenterFocusImageProcessor}


class _TesterBase:
    """Inputs and expected shapes for the mixin (the attributes transformers' testers carry)."""

    def __init__(self, parent, batch_size=7, num_channels=3, min_resolution=30, max_resolution=400, **kwargs):
        kwargs = {**IMAGE_PROCESSOR_KWARGS, **kwargs}
        if TRANSFORMERS_5:
            super().__init__(parent, batch_size=batch_size, num_channels=num_channels,
                             min_resolution=min_resolution, max_resolution=max_resolution, **kwargs)
            return
        self.parent = parent
        self.batch_size = batch_size
        self.num_channels = num_channels
        self.min_resolution = min_resolution
        self.max_resolution = max_resolution
        for key, value in kwargs.items():
            setattr(self, key, value)

    def prepare_image_processor_dict(self):
        return {key: getattr(self, key) for key in IMAGE_PROCESSOR_KWARGS}

    def prepare_image_inputs(self, equal_resolution=False, numpify=False, torchify=False, **kwargs):
        return common.prepare_image_inputs(
            batch_size=kwargs.get("batch_size") or self.batch_size,
            min_resolution=kwargs.get("min_resolution") or self.min_resolution,
            max_resolution=kwargs.get("max_resolution") or self.max_resolution,
            num_channels=kwargs.get("num_channels") or self.num_channels,
            equal_resolution=equal_resolution, numpify=numpify, torchify=torchify,
        )

    def expected_output_image_shape(self, images):
        # every image is resized to `size`, whatever its own size
        return self.num_channels, self.size["height"], self.size["width"]


if TRANSFORMERS_5:

    class CenterFocusImageProcessingTester(_TesterBase, common.ImageProcessingTester):
        def _get_image_processing_classes(self):
            return registered_image_processors()

    class CenterFocusImageProcessingTest(ImageProcessingTestMixin, unittest.TestCase):
        image_processor_tester_class = CenterFocusImageProcessingTester

        def test_new_models_require_torchvision_backend(self):
            if "torchvision" not in self.image_processing_classes:
                self.skipTest("CenterFocus registers no torchvision backend (only its PIL/numpy image processor): "
                              "transformers requires one of models added to transformers itself, a policy for "
                              "in-tree models")
            super().test_new_models_require_torchvision_backend()

else:

    class CenterFocusImageProcessingTester(_TesterBase):
        pass

    class CenterFocusImageProcessingTest(ImageProcessingTestMixin, unittest.TestCase):
        image_processing_class = registered_image_processors().get("slow", CenterFocusImageProcessor)
        fast_image_processing_class = registered_image_processors().get("fast")  # None: no fast variant registered

        def setUp(self):
            super().setUp()
            self.image_processor_tester = CenterFocusImageProcessingTester(self)

        @property
        def image_processor_dict(self):
            return self.image_processor_tester.prepare_image_processor_dict()

        def test_call_numpy_4_channels(self):
            # 4.x's test keeps the processor's `do_convert_rgb` (here True, the default: every input becomes
            # `num_channels`=3 channels, as CLIP's processor converts to RGB) yet expects 4 channels out; 5.x's test
            # passes `do_convert_rgb=False`, which keeps them. Run 4.x's with the conversion off, as 5.x's does.
            self.image_processor_tester.do_convert_rgb = False
            super().test_call_numpy_4_channels()

        def test_image_processor_properties(self):
            """The attributes transformers' image processor tests check on every processor."""
            image_processor = self.image_processing_class(**self.image_processor_dict)
            for name, value in self.image_processor_dict.items():
                self.assertEqual(getattr(image_processor, name), value)
