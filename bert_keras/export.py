"""`python -m bert_keras.export` (`bert-keras export`): the command line of `bert_keras.exporting`.

Importing this module does nothing: `bert_keras.export` is also the Python API's function.
"""

if __name__ == "__main__":
    from bert_keras import cli

    cli.start("export")
