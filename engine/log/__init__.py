"""The decision log: records written behind the response, and their replay."""
