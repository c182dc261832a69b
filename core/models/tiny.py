"""``tiny-random-llama``: a Llama small enough for unit tests, built locally with no network.

A byte-level BPE tokenizer is trained on a few Portuguese sentences (so Portuguese text takes
few tokens and any text can be encoded), and a 2-layer ``LlamaForCausalLM`` is initialised
from a fixed seed. The same code always builds the same files.
"""

from __future__ import annotations

from pathlib import Path

SENTENCES = [
    "Abaixo está uma instrução que descreve uma tarefa. Escreva uma resposta que complete "
    "adequadamente o pedido.",
    "Abaixo está uma instrução que descreve uma tarefa, junto com uma entrada que fornece mais "
    "contexto.",
    "### Instrução:", "### Entrada:", "### Resposta:",
    "O Brasil é o maior país da América do Sul e tem como capital Brasília.",
    "Lisboa é a capital de Portugal e fica na foz do rio Tejo.",
    "O rio Amazonas nasce nos Andes e deságua no oceano Atlântico.",
    "A cidade foi fundada no século XVIII por bandeirantes paulistas em busca de ouro.",
    "Ela nasceu em Recife e estudou ciências naturais na universidade.",
    "Qual é a capital do estado? Onde nasceu o escritor? Quando foi inaugurada a ponte?",
    "O que é um município? Quem foi a botânica? Fale sobre a história da cidade.",
    "A economia local depende da pesca, do turismo e do cultivo de café nas encostas.",
    "O comprimento do rio é de trezentos e dez quilômetros, e a sua foz é o rio Tocantins.",
    "De qual artigo é este trecho? Resuma o texto em uma frase. Responda à pergunta.",
    "Janeiro, fevereiro, março, abril, maio, junho, julho, agosto, setembro, outubro, "
    "novembro e dezembro.",
    "Um, dois, três, quatro, cinco, seis, sete, oito, nove, dez, cem, mil.",
    "São Paulo, Rio de Janeiro, Minas Gerais, Bahia, Pernambuco, Goiás e Espírito Santo.",
    "A população do município era de vinte mil habitantes segundo o censo de 2010.",
    "Os trechos não contêm a resposta. Use apenas as informações dos trechos numerados.",
]

CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
}
VOCAB_SIZE = 512
SEED = 0


def build_tokenizer():
    """A byte-level BPE tokenizer with <s>, </s>, <pad>, <unk>; it adds <s> in front of texts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES * 4, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>", model_max_length=CONFIG["max_position_embeddings"])


def build(dest: str | Path) -> Path:
    """Write the tokenizer and the randomly initialised model into ``dest``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    dest = Path(dest)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **CONFIG)
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest
