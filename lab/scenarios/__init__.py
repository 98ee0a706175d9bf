"""Lab scenarios (issue 7): one pytest module each; they run only inside the lab guest."""
