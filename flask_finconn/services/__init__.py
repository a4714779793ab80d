"""Services: every rule and every commit of Flask-FinConn, as plain functions.

Views, the CLI and webhook handlers call these with the app's
:class:`~flask_finconn.extension.FinConnState`. Services never touch ``request`` or build
responses; they commit, then send signals with the app as sender.
"""
