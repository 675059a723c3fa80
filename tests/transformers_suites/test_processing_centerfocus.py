"""transformers' `ProcessorTesterMixin` (tests/test_processing_common.py) on `CenterFocusProcessor`.

Both lines build the processor offline from its parts (a tiny image processor and a tokenizer trained on a few
captions) and save it to a temporary folder the mixin loads parts from: 5.x through the `_setup_<attribute>`
hooks of its `setUpClass`, 4.x from `cls.tmpdirname`, which the test case provides.
"""

import shutil
import tempfile
import unittest

from centerfocus import CenterFocusImageProcessor, CenterFocusProcessor
from centerfocus.tools.tokenizer import train_caption_tokenizer

from ._upstream import TRANSFORMERS_5, load_or_skip


common = load_or_skip("test_processing_common")
ProcessorTesterMixin = common.ProcessorTesterMixin

# the mixin's text inputs are "lower newer" and " upper older longer string": their words are in the vocabulary
CAPTIONS = [
    "a red circle in the centre",
    "a blue square in the centre with a green triangle at the left",
    "lower newer",
    "upper older longer string",
    "describe the image",
    "what is in the centre",
]


class CenterFocusProcessorTest(ProcessorTesterMixin, unittest.TestCase):
    processor_class = CenterFocusProcessor

    @classmethod
    def _setup_image_processor(cls):
        return CenterFocusImageProcessor(size={"height": 32, "width": 32})

    @classmethod
    def _setup_tokenizer(cls):
        return train_caption_tokenizer(CAPTIONS, vocab_size=200)

    if not TRANSFORMERS_5:

        @classmethod
        def setUpClass(cls):
            super().setUpClass()
            cls.tmpdirname = tempfile.mkdtemp()
            processor = cls.processor_class(cls._setup_image_processor(), cls._setup_tokenizer(),
                                            **cls.prepare_processor_dict())
            processor.save_pretrained(cls.tmpdirname)

        @classmethod
        def tearDownClass(cls):
            shutil.rmtree(cls.tmpdirname, ignore_errors=True)
            super().tearDownClass()
