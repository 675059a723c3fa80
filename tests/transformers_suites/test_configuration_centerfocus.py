"""transformers' `ConfigTester` (tests/test_configuration_common.py) on `CenterFocusConfig`, one test per check."""

import unittest

from centerfocus import CenterFocusConfig

from ._upstream import TRANSFORMERS_5, load_or_skip
from .testers import tiny_config_kwargs


ConfigTester = load_or_skip("test_configuration_common").ConfigTester
# transformers 4.57's ConfigTester also builds `Config(hidden_size=0)`, `Config(num_attention_heads=1)`, ... with
# every other field at its default, and tolerates only NotImplementedError. CenterFocusConfig refuses sizes that build
# no model with a ValueError naming the field (docs/robustness.md); 5.x's ConfigTester no longer builds such configs.
REFUSES_ZERO_SIZES = unittest.skipIf(
    not TRANSFORMERS_5,
    "4.57's ConfigTester builds CenterFocusConfig(hidden_size=0) expecting no error or NotImplementedError; the "
    "config refuses it with ValueError by design (the other checks of run_common_tests run one by one here)")


class CenterFocusConfigTest(unittest.TestCase):
    def setUp(self):
        # tuples as lists: `create_and_test_config_to_json_string` compares each kwarg with its JSON value
        self.config_tester = ConfigTester(self, config_class=CenterFocusConfig, has_text_modality=True,
                                          **tiny_config_kwargs(as_lists=True))

    @REFUSES_ZERO_SIZES
    def test_config_common_properties(self):
        self.config_tester.create_and_test_config_common_properties()

    def test_config_to_json_string(self):
        self.config_tester.create_and_test_config_to_json_string()

    def test_config_to_json_file(self):
        self.config_tester.create_and_test_config_to_json_file()

    def test_config_from_and_save_pretrained(self):
        self.config_tester.create_and_test_config_from_and_save_pretrained()

    def test_config_from_and_save_pretrained_subfolder(self):
        self.config_tester.create_and_test_config_from_and_save_pretrained_subfolder()

    def test_config_from_and_save_pretrained_composite(self):
        self.config_tester.create_and_test_config_from_and_save_pretrained_composite()

    def test_config_with_num_labels(self):
        self.config_tester.create_and_test_config_with_num_labels()

    def test_config_arguments_init(self):
        self.config_tester.check_config_arguments_init()

    def test_config_from_pretrained_custom_kwargs(self):
        self.config_tester.create_and_test_config_from_pretrained_custom_kwargs()

    def test_config_can_be_init_without_params(self):
        self.config_tester.check_config_can_be_init_without_params()

    def test_common_properties_are_readable_and_writable(self):
        # what test_config_common_properties checks, on both lines, with sizes the config accepts
        config = CenterFocusConfig(**tiny_config_kwargs())
        for name, value in (("hidden_size", 48), ("num_attention_heads", 6), ("num_hidden_layers", 3),
                            ("vocab_size", 99)):
            setattr(config, name, value)
            self.assertEqual(getattr(config, name), value)
        self.assertEqual(config.encoder_layers, 3)  # num_hidden_layers names the encoder's layers
        self.assertEqual(CenterFocusConfig(**tiny_config_kwargs(), num_hidden_layers=1).encoder_layers, 1)

    @REFUSES_ZERO_SIZES
    def test_run_common_tests(self):
        """The whole sequence, as transformers' model tests call it."""
        self.config_tester.run_common_tests()
