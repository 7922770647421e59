"""`python -m bert_keras.search` (`bert-keras search`): the command line of `bert_keras.searching`.

Importing this module does nothing: `bert_keras.search` is also the Python API's function.
"""

if __name__ == "__main__":
    from bert_keras import cli

    cli.start("search")
