"""Every string of the page, in Portuguese (pt-BR, the default) and English.

``Tr("pt")("key", name=value)`` formats one string; ``Tr(lang, arms).arm("rag")`` names an
arm of the experiment (its ``label`` in the config, else the usual name of the four default
arms, else its name). A key missing from :data:`STRINGS` shows the key itself (and a test
fails).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from compara.arms import DEFAULT_LABELS

if TYPE_CHECKING:
    from compara.arms import Arm

LANGUAGES = {"pt": "Português (Brasil)", "en": "English"}

STRINGS: dict[str, tuple[str, str]] = {
    # page
    "subtitle": ("Como um modelo de linguagem responde sobre a Wikipédia em português: base, com "
                 "recuperação (RAG), ajustado (QLoRA) e ajustado + RAG, lado a lado.",
                 "How a language model answers about Portuguese Wikipedia: base, with retrieval "
                 "(RAG), fine-tuned (QLoRA) and fine-tuned + RAG, side by side."),
    "tab_ask": ("Perguntar", "Ask"),
    "tab_batch": ("Lote", "Batch"),
    "tab_board": ("Placar", "Leaderboard"),
    "tab_teach": ("Entender", "Learn"),
    "config_error": ("A configuração não pôde ser lida: {err}",
                     "The configuration could not be read: {err}"),
    "loading_model": ("Carregando o modelo, o adaptador e o índice (só na primeira vez)…",
                      "Loading the model, adapter and index (first time only)…"),
    "load_failed": ("Não foi possível carregar o que a barra lateral escolheu: {err}\n\n"
                    "Escolha outro modelo, adaptador ou índice.",
                    "What the sidebar names could not be loaded: {err}\n\nChoose another "
                    "model, adapter or index."),
    "needs_model": ("Carregue um modelo (barra lateral) para perguntar.",
                    "Load a model (sidebar) to ask questions."),
    # sidebar
    "sb_model": ("Modelo", "Model"),
    "base_model": ("Modelo base", "Base model"),
    "base_model_help": ("Um modelo registrado (incluído em um pacote do PyPI, funciona sem "
                        "internet) ou o da configuração.",
                        "A registered model (shipped in a PyPI package, works offline) or the "
                        "one of the config."),
    "quantize": ("Quantização", "Quantisation"),
    "quantize_help": ("4bit = NF4 (QLoRA); a mesma para todos os braços. Numa CPU, os pesos "
                      "4-bit são descomprimidos uma vez para responder; `none` responde ainda "
                      "mais rápido, com outras respostas.",
                      "4bit = NF4 (QLoRA); the same for every arm. On a CPU, 4-bit weights are "
                      "unpacked once for answering; `none` answers faster still, with other "
                      "answers."),
    "adapter": ("Adaptador (ajuste fino)", "Adapter (fine-tuning)"),
    "adapter_help": ("Pastas de adapters/ criadas por `compara finetune`.",
                     "Folders in adapters/ written by `compara finetune`."),
    "index": ("Índice (recuperação)", "Index (retrieval)"),
    "index_help": ("Pastas de indexes/ criadas por `compara index`.",
                   "Folders in indexes/ written by `compara index`."),
    "none": ("(nenhum)", "(none)"),
    "arms": ("Braços", "Arms"),
    "arms_help": ("Os braços ajustados precisam de um adaptador; os com RAG, de um índice.",
                  "The fine-tuned arms need an adapter; the RAG arms an index."),
    "arm_unavailable": ("Sem **{arm}**: {why}", "No **{arm}**: {why}"),
    "sb_retrieval": ("Recuperação", "Retrieval"),
    "retriever": ("Busca", "Retriever"),
    "retriever_hybrid": ("híbrida (densa + BM25)", "hybrid (dense + BM25)"),
    "retriever_dense": ("densa (FAISS)", "dense (FAISS)"),
    "retriever_bm25": ("palavras-chave (BM25)", "keywords (BM25)"),
    "top_k": ("Trechos no prompt (top-k)", "Passages in the prompt (top-k)"),
    "top_k_help": ("Quantos trechos recuperados o modelo lê.",
                   "How many retrieved passages the model reads."),
    "sb_decoding": ("Decodificação", "Decoding"),
    "decoding_shared": ("Iguais para todos os braços.", "The same for every arm."),
    "max_new_tokens": ("Máximo de tokens novos", "Max new tokens"),
    "max_new_tokens_help": ("A geração para no EOS ou neste limite.",
                            "Generation stops at EOS or at this limit."),
    "do_sample": ("Amostragem", "Sampling"),
    "do_sample_help": ("Desligada = gulosa (determinística).", "Off = greedy (deterministic)."),
    "temperature": ("Temperatura", "Temperature"),
    "sample_top_k": ("top-k da amostragem", "Sampling top-k"),
    "seed": ("Semente", "Seed"),
    "repetition_penalty": ("Penalidade de repetição", "Repetition penalty"),
    "repetition_penalty_help": ("1.0 = nenhuma.", "1.0 = none."),
    "loaded": ("O que está carregado", "What is loaded"),
    "loaded_model": ("**Modelo:** `{base}` ({kind}, {arch}, {params} parâmetros), {quantize}, "
                     "{dtype}, {device}{cpu}; carregado em {seconds} s.",
                     "**Model:** `{base}` ({kind}, {arch}, {params} parameters), {quantize}, "
                     "{dtype}, {device}{cpu}; loaded in {seconds} s."),
    "loaded_adapter": ("**Adaptador:** `{path}` — modelo de prompt `{template}`, {steps} passos, "
                       "perda de validação {loss0} → {loss}, treinado em {quantize}.",
                       "**Adapter:** `{path}` — prompt template `{template}`, {steps} steps, "
                       "eval loss {loss0} → {loss}, trained on {quantize}."),
    "loaded_no_adapter": ("Sem adaptador: só os braços sem ajuste fino.",
                          "No adapter: only the arms without fine-tuning."),
    "loaded_index": ("**Índice:** `{path}` — {chunks} trechos de {articles} artigos, `{embedder}`, "
                     "FAISS {faiss}, criado em {created}.",
                     "**Index:** `{path}` — {chunks} chunks of {articles} articles, `{embedder}`, "
                     "FAISS {faiss}, built {created}."),
    "loaded_no_index": ("Sem índice: sem os braços com RAG.", "No index: no RAG arms."),
    # asking
    "blind_mode": ("Avaliação às cegas", "Blind rating"),
    "blind_help": ("As respostas aparecem como A, B, C… em ordem aleatória; os nomes só são "
                   "revelados depois que o voto é salvo.",
                   "Answers appear as A, B, C… in a random order; the names are revealed only "
                   "after the vote is saved."),
    "question_source": ("Pergunta", "Question"),
    "source_typed": ("digitar", "type it"),
    "source_file": ("de um arquivo de perguntas", "from a question file"),
    "question": ("Pergunta", "Question"),
    "question_placeholder": ("Ex.: Em que ano foi fundada a cidade do Rio de Janeiro?",
                             "E.g. Em que ano foi fundada a cidade do Rio de Janeiro?"),
    "reference_optional": ("Resposta de referência (opcional)", "Reference answer (optional)"),
    "question_help": ("Até {limit} caracteres.", "Up to {limit} characters."),
    "reference_help": ("Com uma referência aparecem as métricas; separe alternativas com |. Até "
                       "{limit} caracteres.", "With a reference the metrics appear; separate "
                                              "alternatives with |. Up to {limit} characters."),
    "question_file": ("Arquivo de perguntas", "Question file"),
    "no_question_files": ("Nenhum arquivo de perguntas em questions/ ou runs/.",
                          "No question file in questions/ or runs/."),
    "file_problems": ("Do arquivo: {n} registro(s) inválido(s) ignorado(s), {cut} pergunta(s) "
                      "longa(s) cortada(s) (detalhes no log).",
                      "From the file: {n} bad record(s) skipped, {cut} long question(s) cut "
                      "(details in the log)."),
    "reading": ("ler {path}", "reading {path}"),
    "reference_is": ("Referência: {ref}", "Reference: {ref}"),
    "reference_line": ("Referência: **{ref}**", "Reference: **{ref}**"),
    "ask": ("Perguntar", "Ask"),
    "stop": ("Parar", "Stop"),
    "stop_help": ("Interrompe a geração; as respostas completas ficam.",
                  "Stops the generation; the finished answers stay."),
    "stopped": ("Geração interrompida. Use “Responder o que falta” para continuar.",
                "Generation stopped. Use “Answer the rest” to go on."),
    "continue": ("Responder o que falta", "Answer the rest"),
    "ask_hint": ("Digite ou escolha uma pergunta e clique em “Perguntar”.",
                 "Type or pick a question and click “Ask”."),
    "err_empty": ("Digite uma pergunta.", "Type a question."),
    "err_too_long": ("A pergunta tem {n} caracteres; o máximo é {limit}.",
                     "The question has {n} characters; at most {limit}."),
    "err_reference_too_long": ("A referência tem {n} caracteres; o máximo é {limit}.",
                               "The reference has {n} characters; at most {limit}."),
    "err_question": ("Pergunta inválida: {reason}", "Invalid question: {reason}"),
    "err_no_file": ("Escolha um arquivo de perguntas válido.", "Choose a valid question file."),
    "err_no_arms": ("Escolha pelo menos um braço na barra lateral.",
                    "Choose at least one arm in the sidebar."),
    "err_during": ("Erro em {what}: {err}", "Error in {what}: {err}"),
    "err_unexpected": ("Erro inesperado em {what} ({kind}): {err}. Detalhes no log do servidor.",
                       "Unexpected error in {what} ({kind}): {err}. Details in the server log."),
    "err_arm_hidden": ("Esta resposta falhou (detalhes no log do servidor).",
                       "This answer failed (details in the server log)."),
    "settings_changed": ("O modelo mudou desde esta pergunta: pergunte de novo.",
                         "The model changed since this question: ask again."),
    "blind_needs_two": ("A avaliação às cegas precisa de pelo menos dois braços.",
                        "Blind rating needs at least two arms."),
    "blind_already_seen": ("Você já viu os nomes das respostas desta pergunta nesta sessão: ela "
                           "é mostrada com os nomes, sem voto.",
                           "You have already seen the names for this question in this session: "
                           "it is shown with the names, without a vote."),
    "blind_caption": ("Às cegas: a ordem das respostas é aleatória e os nomes aparecem depois "
                      "do voto.", "Blind: the order is random and the names appear after the vote."),
    "answer_letter": ("Resposta {letter}", "Answer {letter}"),
    "generating": ("gerando…", "generating…"),
    "waiting_other_session": ("Outra sessão está usando o modelo; aguardando a vez…",
                              "Another session is using the model; waiting for its turn…"),
    "not_answered": ("(sem resposta)", "(not answered)"),
    "empty_answer": ("(resposta vazia)", "(empty answer)"),
    "all_answered": ("{n} resposta(s) prontas", "{n} answer(s) ready"),
    "stopped_eos": ("parou no EOS", "stopped at EOS"),
    "stopped_string": ("parou no fim da seção", "stopped at the section marker"),
    "stopped_max": ("cortada no limite de tokens", "cut at the token limit"),
    "retrieval_time": ("busca {s:.2f} s", "retrieval {s:.2f} s"),
    "from_cache": ("do cache", "from the cache"),
    "prompt_truncated": ("⚠ o prompt passou do limite e foi cortado (trechos primeiro).",
                         "⚠ the prompt was over the limit and was cut (passages first)."),
    "passages": ("Trechos recuperados ({n})", "Retrieved passages ({n})"),
    "score": ("pontuação", "score"),
    "prompt": ("Prompt (exatamente o que o modelo recebeu)",
               "Prompt (exactly what the model received)"),
    "metric_contains": ("contém", "contains"),
    "metric_em": ("EM", "EM"),
    "metric_f1": ("F1", "F1"),
    "metric_rouge_l": ("ROUGE-L", "ROUGE-L"),
    "metric_support": ("suporte", "support"),
    "metric_retrieval_hit": ("acerto da busca", "retrieval hit"),
    "metric_abstained": ("absteve-se", "abstained"),
    "metric_abstained_correctly": ("absteve-se quando devia", "correct abstention"),
    "metric_repetition": ("repetição", "repetition"),
    "metric_stopped_on_eos": ("parou no EOS", "stopped at EOS"),
    "metric_ended_cleanly": ("terminou limpa", "ended cleanly"),
    "metric_ref_logprob": ("log-prob da referência", "reference log-prob"),
    "metric_mc_correct": ("múltipla escolha", "multiple choice"),
    "metric_similarity": ("similaridade", "similarity"),
    "metric_portuguese": ("em português", "in Portuguese"),
    "metric_faithfulness": ("fidelidade aos trechos", "faithfulness"),
    "measures_help": ("Medidas sem juiz: log-prob média por token da referência dado o prompt "
                      "deste braço (maior = o braço acha a resposta certa mais provável); "
                      "similaridade e5 com a referência; se a resposta está em português; a "
                      "parte das palavras da resposta que está nos trechos.",
                      "Measures without a judge: mean log-prob per token of the reference given "
                      "this arm's prompt (higher = the arm finds the right answer more likely); "
                      "e5 similarity to the reference; whether the answer is in Portuguese; the "
                      "share of the answer's words found in its passages."),
    # voting
    "vote_title": ("Qual resposta é melhor?", "Which answer is best?"),
    "vote_help": ("Dê 1 à melhor. Notas iguais = empate. As que ficarem sem nota dividem o "
                  "último lugar (para só escolher a melhor, dê 1 a ela).",
                  "Give 1 to the best. Equal ranks = a tie. Answers left unranked share the "
                  "last place (to just pick the best, give it 1)."),
    "rank_n": ("{n}º", "#{n}"),
    "comment_optional": ("Comentário (opcional)", "Comment (optional)"),
    "save_vote": ("Salvar voto e revelar", "Save vote and reveal"),
    "reveal_without_vote": ("Revelar sem votar", "Reveal without voting"),
    "reveal_without_vote_help": ("Mostra os nomes; esta pergunta não poderá mais ser votada "
                                 "nesta sessão.", "Shows the names; this question can no longer "
                                                  "be voted on in this session."),
    "vote_rank_one": ("Dê uma nota a pelo menos uma resposta (1 = melhor).",
                      "Rank at least one answer (1 = best)."),
    "vote_saved": ("Voto salvo em {path}. Os nomes:", "Vote saved to {path}. The names:"),
    "vote_not_saved": ("O voto não pôde ser salvo: {err}", "The vote could not be saved: {err}"),
    "vote_needs_all": ("O voto abre quando todas as respostas estiverem prontas.",
                       "The vote opens once every answer is ready."),
    "revealed_without_vote": ("Nomes revelados sem voto.", "Names revealed without a vote."),
    # leaderboard
    "no_votes": ("Ainda não há votos em {path}. Vote na aba “Perguntar” com a avaliação às "
                 "cegas ligada.", "No votes in {path} yet. Vote in the “Ask” tab with blind "
                                  "rating on."),
    "board_caption": ("{n} voto(s); intervalos de {conf}% por bootstrap dos votos "
                      "({resamples} reamostragens).",
                      "{n} vote(s); {conf}% intervals by bootstrap over votes ({resamples} "
                      "resamples)."),
    "col_arm": ("Braço", "Arm"),
    "col_votes": ("Votos", "Votes"),
    "col_first": ("1º lugar", "Ranked first"),
    "col_wtl": ("V / E / D", "W / T / L"),
    "col_win_rate": ("Taxa de vitória", "Win rate"),
    "col_bt": ("Bradley–Terry (escala Elo)", "Bradley–Terry (Elo scale)"),
    "col_elo": ("Elo (online)", "Elo (online)"),
    "pairwise_title": ("Confrontos diretos", "Head to head"),
    "pairwise_help": ("Taxa de vitória da linha contra a coluna (empate = meia vitória).",
                      "Win rate of the row against the column (a tie = half a win)."),
    "board_how": ("Como ler o placar", "How to read the leaderboard"),
    "board_explained": (
        "Cada voto vira confrontos entre pares: quem ficou acima vence, notas iguais empatam. "
        "**Taxa de vitória** = (vitórias + empates/2) / confrontos. **Bradley–Terry** ajusta a "
        "força de cada braço por máxima verossimilhança com todos os confrontos de uma vez (não "
        "depende da ordem dos votos); na escala Elo, 1000 é a média e +400 pontos são 10:1 de "
        "chance. **Elo online** atualiza as notas voto a voto (K fixo) e depende da ordem. Os "
        "intervalos vêm de reamostrar os votos; com poucos votos eles são largos.",
        "Each vote becomes pairwise matches: the one ranked higher wins, equal ranks tie. "
        "**Win rate** = (wins + ties/2) / matches. **Bradley–Terry** fits each arm's strength by "
        "maximum likelihood over all matches at once (vote order does not matter); on the Elo "
        "scale 1000 is the average and +400 points are 10:1 odds. **Online Elo** updates the "
        "ratings vote by vote (fixed K) and depends on the order. The intervals come from "
        "resampling the votes; with few votes they are wide."),
    "bad_vote_line": ("Linha {line} do arquivo de votos ignorada: {reason}",
                      "Line {line} of the votes file skipped: {reason}"),
    "download_votes": ("Baixar votes.jsonl", "Download votes.jsonl"),
    # batch
    "batch_intro": ("Um arquivo de perguntas por todos os braços, com o mesmo executor e a mesma "
                    "cache de `compara batch`.",
                    "A question file through every arm, with the same runner and cache as "
                    "`compara batch`."),
    "batch_limit": ("Só as primeiras N perguntas (0 = todas)", "Only the first N questions (0 = all)"),
    "batch_limit_help": ("Rodar de novo continua o lote de onde parou.",
                         "Running again continues the batch where it stopped."),
    "batch_run": ("Executar o lote", "Run the batch"),
    "batch_stop_help": ("Para entre duas respostas; o que já foi respondido fica salvo.",
                        "Stops between two answers; what was answered stays saved."),
    "batch_stopped": ("Lote parado. As respostas já escritas ficam em {path}; “Executar o lote” "
                      "continua de onde parou.",
                      "Batch stopped. The answers written so far stay in {path}; “Run the "
                      "batch” continues where it stopped."),
    "batch_interrupted": ("O lote foi interrompido por outra ação na página. As respostas já "
                          "escritas ficam em {path}; “Executar o lote” continua.",
                          "The batch was interrupted by another action on the page. The answers "
                          "written so far stay in {path}; “Run the batch” continues."),
    "batch_starting": ("Carregando as perguntas…", "Reading the questions…"),
    "batch_progress": ("{done} de {total} respostas", "{done} of {total} answers"),
    "batch_done": ("Pronto: {generated} geradas, {cached} do cache, {kept} já escritas antes.",
                   "Done: {generated} generated, {cached} from the cache, {kept} already written."),
    "batch_what": ("o lote de {path}", "the batch of {path}"),
    "open_run": ("Resultados de", "Results of"),
    "summary_title": ("{n} perguntas — média em % (intervalo de {conf}%)",
                      "{n} questions — mean in % ({conf}% interval)"),
    "col_answers": ("respostas", "answers"),
    "col_latency": ("latência (mediana)", "latency (median)"),
    "col_tps": ("tokens/s (mediana)", "tokens/s (median)"),
    "plots": ("Gráficos", "Plots"),
    "browse_title": ("Respostas lado a lado", "Answers side by side"),
    # teach
    "teach_arms": ("Os braços", "The arms"),
    "teach_arm_no_adapter": ("Os pesos base, sem adaptador", "The base weights, no adapter"),
    "teach_arm_adapter": ("O adaptador do experimento ligado", "The experiment's adapter on"),
    "teach_arm_adapter_in": ("O adaptador `{path}` ligado", "The adapter `{path}` on"),
    "teach_arm_no_retrieval": ("sem trechos no prompt", "no passages in the prompt"),
    "teach_arm_retrieval": ("com os trechos da recuperação do experimento",
                            "with the passages of the experiment's retrieval"),
    "teach_arm_retrieval_with": ("com os trechos de uma recuperação com {changes}",
                                 "with the passages of a retrieval with {changes}"),
    "teach_why": ("Por que as respostas diferem", "Why the answers differ"),
    "teach_live": ("Na pergunta de agora", "In the question just asked"),
    "teach_exposure": ("O gráfico de exposição", "The exposure plot"),
    "teach_no_round": ("Faça uma pergunta na aba “Perguntar” para lê-la aqui.",
                       "Ask a question in the “Ask” tab to read it here."),
    "teach_blind": ("A pergunta atual está às cegas: a leitura aparece depois do voto.",
                    "The current question is blind: the reading appears after the vote."),
    "teach_no_reference": ("Sem resposta de referência: digite uma para ver as métricas.",
                           "No reference answer: type one to see the metrics."),
    "teach_seen": ("A referência aparece em {n} resposta(s) do conjunto de treinamento.",
                   "The reference appears in {n} output(s) of the training set."),
    "read_contains": ("a resposta contém a referência", "the answer contains the reference"),
    "read_not_contains": ("a resposta não contém a referência",
                          "the answer does not contain the reference"),
    "read_support": ("a referência estava nos trechos lidos", "the reference was in the passages"),
    "read_no_support": ("a busca não trouxe a referência", "the search did not bring the reference"),
    "read_abstained": ("o modelo preferiu não responder", "the model declined to answer"),
    "read_eos": ("parou sozinho (EOS)", "stopped on its own (EOS)"),
    "read_stop_string": ("parou ao começar uma nova seção do modelo de prompt (###)",
                         "stopped when it began a new section of the template (###)"),
    "read_cut": ("foi cortado no limite de tokens", "was cut at the token limit"),
    "teach_plot_of": ("Do lote {run}:", "From the run {run}:"),
    "teach_no_plot": ("Rode um lote com referências (aba “Lote”) para ver o gráfico.",
                      "Run a batch with references (“Batch” tab) to see the plot."),
}


class Tr:
    """The strings of one language, and the names of the experiment's ``arms``."""

    def __init__(self, lang: str = "pt", arms: Iterable[Arm] = ()):
        self.lang = lang if lang in LANGUAGES else "pt"
        self._i = list(LANGUAGES).index(self.lang)
        self.arms = {a.name: a for a in arms}

    def __call__(self, key: str, **params: object) -> str:
        pair = STRINGS.get(key)
        if pair is None:
            return key
        return pair[self._i].format(**params) if params else pair[self._i]

    def arm(self, arm: str) -> str:
        """An arm's name for people: the experiment's arm's title; an arm the experiment does
        not have (a vote or run of another config): the usual name of a default arm, else
        the name itself."""
        if arm in self.arms:
            return self.arms[arm].title(self.lang)
        label = DEFAULT_LABELS.get(arm, {})
        return label.get(self.lang) or arm
