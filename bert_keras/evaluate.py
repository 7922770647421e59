"""`python -m bert_keras.evaluate` (`bert-keras evaluate`): `bert_keras.evaluation`'s command line.

Importing this module does nothing: `bert_keras.evaluate` is also the Python API's function.
"""

if __name__ == "__main__":
    from bert_keras import cli

    cli.start("evaluate")
