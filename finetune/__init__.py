"""Fine-tuning: instruction records to tokens (prompt masked, EOS learned), QLoRA, merge."""
